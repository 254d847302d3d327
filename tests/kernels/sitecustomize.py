"""Imported at the start of every Python subprocess of a ``pytest --no-mkldnn`` run (tests/conftest.py
puts this folder first on PYTHONPATH): the subprocess computes with the kernels of the test process."""
import os

if os.environ.get("MOBILENETS_TEST_MKLDNN") == "0":
    import torch

    torch.backends.mkldnn.enabled = False
