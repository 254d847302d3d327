"""Killing a training process the hard way, for the resume tests (imported by test modules)."""
import os
import signal
import time
from pathlib import Path

from mobilenets.engine.runfolder import load_checkpoint


def kill_at_first_checkpoint(process, checkpoint: Path, timeout: float = 300) -> int:
    """Wait for ``checkpoint`` to appear, then ``kill -9`` the training ``process`` (a Popen);
    return the step the checkpoint holds. Fails if the run ended before it could be killed."""
    stop = time.time() + timeout
    while not checkpoint.exists() and time.time() < stop and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return load_checkpoint(checkpoint)["step"]
