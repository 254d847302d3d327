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
import torch

from mobilenets.cli import main
from mobilenets.engine.runfolder import load_checkpoint


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``mobilenets ARGV`` in this process: (exit status, stdout, stderr). Arguments may be paths
    or numbers."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code, err, *named):
    """Exit status 2, one error line (no traceback, no usage block) naming each of ``named``."""
    assert code == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    assert len([line for line in err.splitlines() if ": error: " in line]) == 1, err
    for n in named:
        assert str(n) in err, err


def make_image_folder(root: Path, classes: int = 2, per_class: int = 32, val_per_class: int = 4,
                      size: int = 40, seed: int = 0) -> Path:
    """An ImageFolder of noisy PNGs, each class around its own colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([60 + 120 * (c % 2), 60 + 60 * (c % 3), 200 - 120 * (c % 2)])
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root

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
