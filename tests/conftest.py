"""The suite on other CPU kernels. The project's machines differ (AVX2 only; AVX-512 with VNNI and
BF16; Intel AMX), and every test must pass on all of them, so the tests whose outcome involves
floating-point rounding carry the ``numerics`` marker and can be run on other kernels:

    pytest -m numerics          # only those tests
    pytest --threads 1          # torch (and every subprocess) on one thread
    pytest --no-mkldnn          # torch.backends.mkldnn off, here and in every Python subprocess

ATen's and oneDNN's instruction sets are chosen when torch loads, so they are set in the
environment, not by an option: ``ATEN_CPU_CAPABILITY=default|avx2|avx512`` and
``ONEDNN_MAX_CPU_ISA=AVX2|AVX512_CORE|...``. The run's header names what is in force.
``scripts/cpu_matrix.sh`` runs the numerics tests under a designed set of these settings.
The options also read ``MOBILENETS_TEST_THREADS=1`` and ``MOBILENETS_TEST_MKLDNN=0``. A plain
run changes nothing.

Tests that read the real Fashion-MNIST carry ``@pytest.mark.needs_data``: they are skipped, with
the reason in the summary, where ``bash scripts/setup.sh`` could not install it. Helpers shared by
test modules live in ``helpers.py`` (and the peer-library reference models in ``references.py``);
test modules never import from each other. Fixtures for testing the command line: ``cli`` runs a
command in this process, ``refused`` asserts the answer to bad input (one line naming the
parameter or file, exit status 2).
"""
import os
from pathlib import Path

import pytest
import torch
from helpers import assert_one_clear_line, run_cli

from mobilenets.engine.data import FASHION_MNIST_ROOT

#: The files of the library's default Fashion-MNIST root (Debian's dataset-fashion-mnist).
FASHION_MNIST_FILES = [f"{split}-{kind}-idx{dims}-ubyte.gz" for split in ("train", "t10k")
                       for kind, dims in (("images", 3), ("labels", 1))]

#: Put first on PYTHONPATH under --no-mkldnn: its sitecustomize turns oneDNN off in every Python
#: subprocess a test starts (training killed and resumed, torchrun), as in this process.
SUBPROCESS_SITE = Path(__file__).resolve().parent / "kernels"


def pytest_addoption(parser):
    parser.addoption("--threads", type=int, default=None,
                     help="torch threads for the whole run (OMP_NUM_THREADS for subprocesses)")
    parser.addoption("--no-mkldnn", action="store_true", default=False,
                     help="turn torch.backends.mkldnn off for the whole run, subprocesses included")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "numerics: the outcome involves floating-point rounding (training, resume, "
        "export parity, quantization agreement, tolerances); scripts/cpu_matrix.sh runs these "
        "on other CPU kernels")
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512") \
            and not torch.cpu._is_avx512_supported():
        # ATen takes ATEN_CPU_CAPABILITY at its word and dies of SIGILL at its first AVX-512 kernel.
        raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY')} is "
                                "not available on this CPU (it has no AVX-512)")
    # Every export from the tool-chain, none from a cache another run filled (and nothing
    # written to the user's ~/.cache): the cache's own tests turn it on in a temporary folder.
    os.environ["MOBILENETS_CACHE_DIR"] = "off"
    threads = config.getoption("--threads") or os.environ.get("MOBILENETS_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if config.getoption("--no-mkldnn") or os.environ.get("MOBILENETS_TEST_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
        os.environ["MOBILENETS_TEST_MKLDNN"] = "0"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SUBPROCESS_SITE), os.environ.get("PYTHONPATH")) if p)
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
            f"mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}, "
            f"ATen {torch.backends.cpu.get_cpu_capability()}, "
            f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(the machine)')}")


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
