"""Interrupting a training run, and the one check of its resume (imported by test modules)."""
import os
import signal
import time
from pathlib import Path

import torch

from mobilenets.engine.loop import load_checkpoint


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


def assert_resumed_exactly(uninterrupted: dict, resumed: dict, what: str = "") -> None:
    """The project's one standard for exact resume (docs/reliability.md): on the same machine,
    with the same thread count and kernel settings, a run interrupted and resumed ends with the
    uninterrupted run's weights and buffers bit for bit; no tolerance. (Another machine or thread
    count sums in another order: nothing is promised there beyond rounding.) Both arguments are
    state dicts; ``what`` names the comparison in the failure message."""
    assert list(resumed) == list(uninterrupted), f"{what}: other tensors: {list(resumed)}"
    for k, a in uninterrupted.items():
        b = resumed[k]
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        assert same, (f"{what}: {k} differs after resuming (max abs diff "
                      f"{(a.double() - b.double()).abs().max().item():.3g})")
