"""Options that run the suite on other CPU kernels, to find tests that depend on one kernel's
rounding (the project's machines are AVX2-only and AVX-512 with VNNI and BF16):

    pytest --threads 1          # torch (and every subprocess) on one thread
    pytest --threads 2
    pytest --no-mkldnn          # torch.backends.mkldnn off: PyTorch's own convolution kernels

The same through the environment: ``MOBILENETS_TEST_THREADS=1``, ``MOBILENETS_TEST_MKLDNN=0``.
The default run changes nothing.

Fixtures for testing the command line: ``cli`` runs a command in this process, ``refused``
asserts the answer to bad input (one line naming the parameter or file, exit status 2).
"""
import os

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


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: run ``mobilenets ARGV`` in this process (arguments may be paths or
    numbers); returns (exit status, stdout, stderr)."""
    from mobilenets.cli import main

    def run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def refused(cli):
    """``refused(argv, *named)``: run ``mobilenets ARGV`` and assert the project's answer to bad
    input: exit status 2 and one error line (no traceback, no usage block) naming each of
    ``named``; returns stderr."""
    def check(argv, *named) -> str:
        code, _, err = cli(*argv)
        assert code == 2, err
        assert "Traceback" not in err and "usage:" not in err, err
        assert len([line for line in err.splitlines() if ": error: " in line]) == 1, err
        for n in named:
            assert str(n) in err, err
        return err
    return check
