"""Options that run the suite on other CPU kernels, to find tests that depend on one kernel's
rounding (the project's machines are AVX2-only and AVX-512 with VNNI and BF16):

    pytest --threads 1          # torch (and every subprocess) on one thread
    pytest --threads 2
    pytest --no-mkldnn          # torch.backends.mkldnn off: PyTorch's own convolution kernels

The same through the environment: ``MOBILENETS_TEST_THREADS=1``, ``MOBILENETS_TEST_MKLDNN=0``.
The default run changes nothing.

Tests that read the real Fashion-MNIST carry ``@pytest.mark.needs_data``: they are skipped, with
the reason in the summary, where ``bash scripts/setup.sh`` could not install it. Helpers shared by
test modules live in ``helpers.py`` (and the peer-library reference models in ``references.py``);
test modules never import from each other. Fixtures for testing the command line: ``cli`` runs a
command in this process, ``refused`` asserts the answer to bad input (one line naming the
parameter or file, exit status 2).
"""
import os

import pytest
import torch
from helpers import assert_one_clear_line, run_cli

from mobilenets.engine.data import FASHION_MNIST_ROOT

#: The files of the library's default Fashion-MNIST root (Debian's dataset-fashion-mnist).
FASHION_MNIST_FILES = [f"{split}-{kind}-idx{dims}-ubyte.gz" for split in ("train", "t10k")
                       for kind, dims in (("images", 3), ("labels", 1))]


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
    config.addinivalue_line("markers", "needs_data: reads Fashion-MNIST from the library's "
                            "default root (skipped where it is not installed)")


def pytest_collection_modifyitems(config, items):
    missing = [f for f in FASHION_MNIST_FILES if not (FASHION_MNIST_ROOT / f).is_file()]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"Fashion-MNIST is not installed: {FASHION_MNIST_ROOT / missing[0]}"
                                   " is missing (bash scripts/setup.sh installs it)")
    for item in items:
        if item.get_closest_marker("needs_data"):
            item.add_marker(skip)


def pytest_report_header(config):
    return (f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
            f"mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}")


# --------------------------------------------------------------------------- fixtures

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
