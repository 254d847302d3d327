"""Reading and writing files safely: every file the project writes goes through ``atomic_path``,
and the text, JSON and special-file checks of every reader live here.

A temporary file in the same folder is written, fsynced, then renamed over the target, so a killed
process never leaves a half-written file and readers see the old or the new file, never a mix.
The temporary file's name holds the writer's process id (``.NAME.PID.XXXX.tmp``): the next write
of the same target removes those a dead process left behind. Files read together (OpenVINO's
``.xml`` and ``.bin``) change as one through ``atomic_files``. A writer's failure, however it
reports it (a full disk: ``write_failure``), is an ``OSError`` naming the target.

No command writes over a file it was given to read: inside ``command_inputs`` (the command line
opens one per command), ``atomic_path`` refuses a target that is one of the command's inputs,
whether named on the command line or read on the way (``note_input``: model files).
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterable, Iterator, Sequence

#: The inputs of the running command: {(device, inode): what names it}; None outside a command.
_INPUTS: dict[tuple[int, int], str] | None = None


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextmanager
def command_inputs(named: dict[str, str] | None = None) -> Iterator[None]:
    """The scope of one command: files named in ``named`` (``{path: what names it}``, e.g.
    ``{"teacher.safetensors": "--teacher"}``) and those read with ``note_input`` while it runs
    may not be written by ``atomic_path``. Outside such a scope nothing is recorded."""
    global _INPUTS
    saved, _INPUTS = _INPUTS, {}
    try:
        for path, what in (named or {}).items():
            note_input(path, what)
        yield
    finally:
        _INPUTS = saved


def note_input(path: str | os.PathLike, what: str | None = None) -> None:
    """Record ``path`` as an input of the running command (no-op outside ``command_inputs``)."""
    if _INPUTS is not None:
        key = _file_id(path)
        if key is not None and stat.S_ISREG(os.stat(path).st_mode):
            _INPUTS.setdefault(key, what or str(path))


def check_not_input(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` if ``path`` is a file the running command reads.

    Compared by device and inode, so another spelling of the path, or a hard or symbolic link to
    the input, is caught too.
    """
    key = _file_id(path) if _INPUTS else None
    if key is not None and key in _INPUTS:
        what = _INPUTS[key]
        named = f" ({what})" if what != str(path) else ""
        raise ValueError(f"refusing to write {path}: it is an input of this command{named}; "
                         "write the output elsewhere")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` at worst)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(path: str | os.PathLike, what: str, folder: bool = False) -> None:
    """Refuse, before any work, an output a command could not write at its end.

    Args:
        path: A file (or, with ``folder``, a folder) the command will write.
        what: The flag naming it, for the message, e.g. ``"--output"``.
        folder: ``path`` is a folder to write into, not a file. Default False.

    Raises:
        ValueError: naming ``what`` and ``path``: a file output that is a folder, a folder
            output that is a file, a parent that is a file, a place the user may not write
            (the nearest existing folder is read-only), or an input of the running command.
    """
    p = Path(path)
    if p.is_dir() and not folder:
        raise ValueError(f"{what} {p} is a folder; name a file")
    if p.exists() and folder and not p.is_dir():
        raise ValueError(f"{what} {p} is a file, not a folder")
    if not folder:
        check_not_input(p)
    base = _nearest_existing(p if folder else p.parent)
    if not base.is_dir():
        raise ValueError(f"{what} {p}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {p}: cannot write in {base} (permission denied); choose "
                         "another place")


def display_text(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode escaped: the undecodable bytes of a
    file name (Python's surrogate escapes, ``os.fsdecode``) as ``\\xNN``, so a name that is
    not UTF-8 is shown, and written to UTF-8 files, as what it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    return "".join(f"\\x{ord(c) - 0xdc00:02x}" if "\udc80" <= c <= "\udcff" else
                   f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in text)


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


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.NAME.PID.*.tmp`` files (and links) of ``path`` whose writer is dead (a killed
    write)."""
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        # Files of the old naming (no pid) or of a dead writer are leftovers.
        if not pid.isdigit() or not _pid_alive(int(pid)):
            try:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.path)
            except OSError:
                pass


#: What ``torch.save`` says when a write fails (a RuntimeError without an errno); a full disk
#: gives "unexpected pos" or "iostream error" too, depending on where the write stopped.
TORCH_WRITE_FAILURES = ("write failed", "failed writing", "unexpected pos", "iostream error")
#: The errno values of a failed write that Rust writers (safetensors) give as "(os error N)".
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)


def write_failure(error: BaseException, path: str | os.PathLike) -> OSError | None:
    """The ``OSError`` naming ``path`` that a writer's ``error`` stands for, or None if the error
    is not a failed write (a bug, a bad value: raise it as it is).

    Writers report a full disk in their own ways: an ``OSError`` naming a temporary file,
    ``torch.save``'s ``RuntimeError`` without an errno (``TORCH_WRITE_FAILURES``: errno 28 when
    under 16 MiB are left on the device, else 5), safetensors' ``SafetensorError`` with
    "(os error 28)" in its text. Each becomes one ``OSError(errno, strerror, path)``, which the
    command line reports as one line naming the file.
    """
    import re

    if isinstance(error, OSError):
        return None if error.errno is None else type(error)(error.errno, error.strerror, str(path))
    text = str(error)
    found = re.search(r"\(os error (\d+)\)", text)
    if found and int(found.group(1)) in WRITE_ERRNOS:
        code = int(found.group(1))
    elif isinstance(error, RuntimeError) and any(p in text for p in TORCH_WRITE_FAILURES):
        try:
            full = shutil.disk_usage(Path(path).parent).free < 2 ** 24
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
    else:
        return None
    return OSError(code, os.strerror(code), str(path))


def _writable(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` whose folder exists, checked as a target of ``atomic_path``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder; name a file")
    check_not_input(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _settle(tmp: Path) -> None:
    """Make a written temporary file durable (fsync) and give it the usual permissions: mkstemp
    makes 0600 files, and writers such as safetensors replace the file with their own 0600 one."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it over ``path``.

    Args:
        path: The final file. Its folder is created if missing.

    On any exception the temporary file is removed and ``path`` is left as it was. Temporary
    files a killed writer left beside ``path`` are removed first.

    Raises:
        ValueError: if ``path`` is a folder, or an input of the running command
            (``command_inputs``).
        OSError: naming ``path``, when the write fails, e.g. errno 28 when the disk is full
            (``path`` is then left as it was), however the writer reports it
            (``write_failure``).
    """
    path = _writable(path)
    _remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as e:  # name the target, not the temporary file (a read-only folder)
        raise type(e)(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        _settle(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        failed = write_failure(e, path)
        if failed is None:
            raise
        raise failed from e


#: The symbolic link, in a file group's store, to the version its files show.
CURRENT = "current"


@contextmanager
def atomic_files(path: str | os.PathLike, suffixes: Sequence[str]) -> Iterator[Path]:
    """Write a group of files that are read together (OpenVINO's ``.xml`` and ``.bin``) so that
    they change as one: readers, and a process killed at any moment, see the old group or the
    new, never a mix (the many-file ``atomic_path``).

    Yields a temporary folder; write into it ``path.name`` and, for each of ``suffixes``,
    ``path.with_suffix(suffix).name``. On success the folder becomes the group's current
    version. The files live in a hidden store beside ``path``, ``.NAME.files/``, one folder per
    version and the link ``current`` to one of them; ``path`` and its companions are symbolic
    links through ``current``, so one atomic rename of ``current`` switches all of them
    (readers open ``path`` as any file). Files of an earlier layout (plain files) are first
    moved into the store unchanged, without a moment where they differ.

    Older versions and those of killed writers (a folder per version, named with the writer's
    process id) are removed by the next write.

    Raises:
        ValueError: as ``atomic_path``, for any file of the group.
        OSError: naming ``path``, when a write fails (``write_failure``); the group is then left
            as it was.
    """
    path = _writable(path)
    names = [path.name] + [path.with_suffix(s).name for s in suffixes]
    for name in names:
        _writable(path.parent / name)
        _remove_stale_temporaries(path.parent / name)
    store = path.parent / f".{path.name}.files"
    store.mkdir(exist_ok=True)
    _remove_old_versions(store)
    work = _version_folder(store)
    try:
        yield work
        for name in names:
            if not (work / name).is_file():
                raise FileNotFoundError(errno.ENOENT, "not written", str(work / name))
            _settle(work / name)
        _adopt_plain_files(path.parent, names, store)
        _link(store / CURRENT, work.name)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        with suppress(OSError):  # a store that holds nothing (a first write failed) goes too
            store.rmdir()
        failed = write_failure(e, path)
        if failed is None:
            raise
        raise failed from e
    _remove_old_versions(store)


def _version_folder(store: Path) -> Path:
    """A new version folder in ``store``, named with this process's id, readable as any folder
    (mkdtemp makes it 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=f"v.{os.getpid()}.", dir=store))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    return folder


def _link(link: Path, target: str) -> None:
    """Point the symbolic link ``link`` at ``target`` in one atomic rename."""
    tmp = link.parent / f".{link.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _adopt_plain_files(folder: Path, names: list[str], store: Path) -> None:
    """Make each of ``names`` in ``folder`` a link through ``store``'s ``current``, the files
    seen through them unchanged: what the names show now (plain files, or nothing) is first
    linked into a version of its own, made current."""
    through = [f"{store.name}/{CURRENT}/{name}" for name in names]
    if all(os.path.islink(folder / n) and os.readlink(folder / n) == t
           for n, t in zip(names, through)):
        return
    old = _version_folder(store)
    for name in names:
        if (folder / name).is_file():
            try:
                os.link(folder / name, old / name)  # no copy: the same file, a second name
            except OSError:
                shutil.copyfile(folder / name, old / name)
    _link(store / CURRENT, old.name)
    for name, target in zip(names, through):
        _link(folder / name, target)


def _remove_old_versions(store: Path) -> None:
    """Remove the versions in ``store`` that are not current and whose writer is this process
    (a group just replaced) or dead (a killed write); a live writer's folder is kept."""
    _remove_stale_temporaries(store / CURRENT)
    try:
        current = os.readlink(store / CURRENT)
    except OSError:
        current = None
    for entry in os.scandir(store):
        pid = entry.name.split(".")[1] if entry.name.startswith("v.") else ""
        if entry.name == current or not pid.isdigit() or not entry.is_dir(follow_symlinks=False):
            continue
        if int(pid) == os.getpid() or not _pid_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


@contextmanager
def staging_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden folder beside ``out_dir``; on success it is renamed to ``out_dir``, so a data
    set is either complete or absent (the folder-sized ``atomic_path``).

    Raises:
        ValueError: if ``out_dir`` exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ValueError(f"output folder {out} already exists (choose another, or overwrite)")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8 (a final newline added if missing; file
    names that are not UTF-8 shown as ``display_text`` does); return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(display_text(text if text.endswith("\n") else text + "\n"),
                       encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON, atomically; return the path."""
    import json

    return write_text(path, json.dumps(data, indent=2))


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a header and rows as CSV, atomically; return the path."""
    import csv

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return Path(path)


def save_png(image, path: str | os.PathLike, atomic: bool = True) -> Path:
    """Write a uint8 image as PNG: (H, W) grey, (1, H, W) grey, (3, H, W) or (H, W, 3) RGB.

    Args:
        image: A tensor or array of uint8.
        path: The file.
        atomic: Through a temporary file (default). Data-set writers that fill a staging folder
            renamed as a whole pass False.

    Returns:
        The path written.
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not atomic:
        Image.fromarray(arr).save(path, format="PNG")
        return Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


#: The output formats of every command that prints a table.
FORMATS = ("table", "csv", "json")
#: The widest line a table or report prints by default (``--wide`` lifts the limit).
TABLE_WIDTH = 100
#: The narrowest a column of prose is wrapped to when a table must fit ``TABLE_WIDTH``.
MIN_WRAP = 24


def render_table(rows: Sequence[dict], fmt: str = "table", right: Sequence[str] = (),
                 width: int | None = TABLE_WIDTH, columns: Sequence[str] | None = None,
                 headers: dict | None = None) -> str:
    """Rows of dicts (the first row's keys are the columns) as an aligned text table, CSV, JSON or
    a Markdown table: the one table renderer of every report and command.

    Args:
        rows: The rows; every row has the first row's keys (others are ignored).
        fmt: ``"table"``, ``"csv"``, ``"json"`` or ``"markdown"`` (a pipe table, every column,
            ``|`` in a cell escaped, for reports written as Markdown). Default ``"table"``.
        right: Columns to right-align besides the numeric ones (e.g. numbers already formatted
            as strings). Default none.
        width: The widest line of a table. A wider table is made to fit, in this order: only
            ``columns`` are kept, columns empty in every row are dropped, the widest columns of
            prose (text with spaces; not the first column) are wrapped onto several lines, down
            to ``MIN_WRAP`` characters, and the columns
            left over are printed as further blocks below, each led by the first column again.
            ``None``: every column, one line per row (``--wide``). Default ``TABLE_WIDTH``.
        columns: The columns of the default, narrow table (default: all). ``width=None``, CSV and
            JSON always give every column.
        headers: Headings for some columns, e.g. shorter ones (CSV and JSON keep the keys).

    Numbers are right-aligned; ``None`` prints as an empty cell.

    Raises:
        ValueError: for an unknown ``fmt``.

    Example:
        >>> print(render_table([{"name": "a", "top1": 70.6}, {"name": "bb", "top1": 9.5}]))
        name  top1
        ----  ----
        a     70.6
        bb     9.5
    """
    import csv
    import io
    import json

    if fmt not in FORMATS and fmt != "markdown":
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if not rows:
        return ""
    keys = list(rows[0])
    if fmt == "markdown":
        def line(cells):
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        return "\n".join([line((headers or {}).get(k, k) for k in keys), "|" + "---|" * len(keys),
                          *(line("" if r.get(k) is None else r.get(k) for k in keys)
                            for r in rows)])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if width is not None:
        keys = [k for k in (columns or keys) if any(r.get(k) not in (None, "") for r in rows)]
    names = [str((headers or {}).get(k, k)) for k in keys]
    cells = [["" if r.get(k) is None else str(r.get(k)) for k in keys] for r in rows]
    numeric = [k in right or all(isinstance(r.get(k), (int, float)) or r.get(k) is None
                                 for r in rows) for k in keys]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    if width is not None:
        prose = [i > 0 and not numeric[i] and any(" " in c[i] for c in cells)
                 for i in range(len(keys))]
        _wrap_widths(widths, names, prose, width)
    blocks = _column_blocks(widths, width)
    out = []
    for block in blocks:
        out += [""] if out else []
        out += _table_lines([names[i] for i in block], [[c[i] for i in block] for c in cells],
                            [widths[i] for i in block], [numeric[i] for i in block])
    return "\n".join(out)


def wrap_text(text: str, width: int | None = TABLE_WIDTH) -> list[str]:
    """``text`` as lines of at most ``width`` characters, broken at spaces only (paths and names
    stay whole); ``[text]`` for ``width=None`` (``--wide``)."""
    import textwrap

    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def _wrap_widths(widths: list[int], names: list[str], prose: list[bool], width: int) -> None:
    """Narrow the widest ``prose`` columns, in place, until the table fits ``width`` (or none is
    wider than ``MIN_WRAP`` or its heading's longest word)."""
    while sum(widths) + 2 * (len(widths) - 1) > width:
        text = [i for i, wraps in enumerate(prose)
                if wraps and widths[i] > max(MIN_WRAP, *map(len, names[i].split()))]
        if not text:
            return
        i = max(text, key=lambda j: widths[j])
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[i] = max(widths[i] - excess, MIN_WRAP, *map(len, names[i].split()))


def _column_blocks(widths: list[int], width: int | None) -> list[list[int]]:
    """Column indices per block: all in one, or as many as fit ``width`` per block, each block
    after the first led by column 0 again."""
    if width is None or sum(widths) + 2 * (len(widths) - 1) <= width:
        return [list(range(len(widths)))]
    blocks, block = [], [0]
    for i in range(1, len(widths)):
        if len(block) > 1 and sum(widths[j] + 2 for j in block) + widths[i] > width:
            blocks.append(block)
            block = [0]
        block.append(i)
    return blocks + [block]


def _table_lines(names: list[str], cells: list[list[str]], widths: list[int],
                 numeric: list[bool]) -> list[str]:
    """The heading, the rule and the rows of one block; cells wider than their column wrap."""
    def lines(cs):
        parts = [wrap_text(c, w) for c, w in zip(cs, widths)]
        return ["  ".join((p[n] if n < len(p) else "").rjust(w) if num else
                          (p[n] if n < len(p) else "").ljust(w)
                          for p, w, num in zip(parts, widths, numeric)).rstrip()
                for n in range(max(map(len, parts)))]
    return [*lines(names), "  ".join("-" * w for w in widths)] + [x for c in cells for x in lines(c)]
