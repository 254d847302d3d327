"""Reading files safely: the checks every reader of the project makes, in one place.

A path is read only if it is a regular file (``check_regular_file``: a folder, FIFO, socket or
device is refused, as reading one would fail or block forever); text is UTF-8 with a leading
byte-order mark dropped (``read_text``, ``read_csv``, ``read_json``); torch files are loaded
without unpickling code (``safe_torch_load``). Every error is a ``ValueError`` or
``FileNotFoundError`` naming the file, which the command line reports as one line. Writing is
``fileio``'s.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a ``Path`` if it is a regular file (or a link to one).

    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: for a folder, a FIFO, a socket or a device: reading those would fail or
            block forever.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot open {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device" if
                (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "not a regular file")
        raise ValueError(f"{what} {path} is {kind}, not a file")
    return path


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file's contents (a leading byte-order mark dropped), checked.

    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: naming the file if it is not a regular file or not UTF-8 text.
    """
    path = check_regular_file(path, what)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r}); save it as UTF-8") from None


def read_csv(path: str | os.PathLike, dicts: bool = False, what: str = "CSV file"):
    """A ``csv.reader`` (or ``csv.DictReader`` with ``dicts``) over a UTF-8 CSV file, a
    byte-order mark dropped (``read_text``'s checks and errors)."""
    import csv
    import io

    text = io.StringIO(read_text(path, what), newline="")
    return csv.DictReader(text) if dicts else csv.reader(text)


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON file, naming the file (and line) in every error.

    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: if it is not a regular file, not UTF-8 or not valid JSON.
    """
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno}") from None


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` (no code in the file can run) with errors that name
    the file. A file the safe loader refuses is said to be not ours and possibly unsafe, without
    torch's advice to retry with ``weights_only=False`` (which would run any code it holds).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is not a regular file, is damaged, or holds Python
            objects that a safe load refuses.
    """
    import pickle

    import torch

    path = check_regular_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not a {what} written by mobilenets or a plain PyTorch state "
                         "dict: it holds Python objects that a safe load refuses, and may be "
                         "unsafe to open") from None
    except Exception as e:  # truncated or foreign files raise many types
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"cannot load {what} {path}: {text}") from None
