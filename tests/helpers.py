"""Helpers shared by the test modules (``from helpers import ...``: pytest puts tests/ on the
path). Test modules never import from each other; what two of them need lives here."""
import gzip
import io
import os
import signal
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from mobilenets.cli import main
from mobilenets.engine.loop import load_checkpoint


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``mobilenets ARGV`` in this process: (exit status, stdout, stderr). Arguments may be paths
    or numbers."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_captured(*argv) -> tuple[int, str, str]:
    """``run_cli`` for module-scoped fixtures, where ``capsys`` is not available: the streams are
    captured here."""
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()) as err:
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX file (Fashion-MNIST's format) of ``array`` as unsigned bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


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
