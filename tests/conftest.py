"""Options that run the suite on other CPU kernels, to find tests that depend on one kernel's
rounding (the project's machines are AVX2-only and AVX-512 with VNNI and BF16):

    pytest --threads 1          # torch (and every subprocess) on one thread
    pytest --threads 2
    pytest --no-mkldnn          # torch.backends.mkldnn off: PyTorch's own convolution kernels

The same through the environment: ``MOBILENETS_TEST_THREADS=1``, ``MOBILENETS_TEST_MKLDNN=0``.
The default run changes nothing.

Helpers that several test modules use live here too (``from conftest import ...``): test modules
never import from each other. Fixtures for testing the command line: ``cli`` runs a command in
this process, ``refused`` asserts the answer to bad input (one line naming the parameter or file,
exit status 2).
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--threads", type=int, default=None,
                     help="torch threads for the whole run (OMP_NUM_THREADS for subprocesses)")
    parser.addoption("--no-mkldnn", action="store_true", default=False,
                     help="turn torch.backends.mkldnn off for the whole run (in-process tests)")


def pytest_configure(config):
    threads = config.getoption("--threads") or os.environ.get("MOBILENETS_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if config.getoption("--no-mkldnn") or os.environ.get("MOBILENETS_TEST_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False


def pytest_report_header(config):
    return (f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
            f"mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}")


# --------------------------------------------------------------------------- shared helpers

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``mobilenets ARGV`` in this process: (exit status, stdout, stderr). Arguments may be paths
    or numbers."""
    from mobilenets.cli import main

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


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: run ``mobilenets ARGV`` in this process (arguments may be paths or
    numbers); returns (exit status, stdout, stderr)."""
    return lambda *argv: run_cli(capsys, *argv)


@pytest.fixture
def refused(cli):
    """``refused(argv, *named)``: run ``mobilenets ARGV`` and assert the project's answer to bad
    input (``assert_one_clear_line``); returns stderr."""
    def check(argv, *named) -> str:
        code, _, err = cli(*argv)
        assert_one_clear_line(code, err, *named)
        return err
    return check
