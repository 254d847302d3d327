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
"""
import os
from pathlib import Path

import pytest
import torch

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
    threads = config.getoption("--threads") or os.environ.get("MOBILENETS_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if config.getoption("--no-mkldnn") or os.environ.get("MOBILENETS_TEST_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
        os.environ["MOBILENETS_TEST_MKLDNN"] = "0"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SUBPROCESS_SITE), os.environ.get("PYTHONPATH")) if p)


def pytest_report_header(config):
    return (f"torch {torch.__version__}: {torch.get_num_threads()} threads, "
            f"mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}, "
            f"ATen {torch.backends.cpu.get_cpu_capability()}, "
            f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(the machine)')}")
