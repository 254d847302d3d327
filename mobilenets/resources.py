"""How much memory this machine can give a command, and the one check that refuses a size that
cannot fit before anything is allocated (a width multiplier of 1000, a resolution of 100,000, a
model file whose config asks for terabytes): an allocation that large would otherwise fail deep
inside torch, or succeed lazily and bring the out-of-memory killer onto every process of the
machine.
"""
from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int:
    """Bytes of memory available to this process: the kernel's ``MemAvailable``, capped by a
    cgroup limit (containers) when there is one; the physical memory if neither is readable."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap.isdigit() and int(cap) < 1 << 60:
                found.append(int(cap) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    if not found:
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return max(min(found), 0)


def format_bytes(n: float) -> str:
    """``1.5e10`` -> ``"15.0 GB"`` (decimal units, as ``free -h --si``)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


class MemoryLimitError(ValueError):
    """A size that needs more memory than this machine has (refused before allocating it)."""


def check_fits(needed: float, what: str, advice: str) -> None:
    """Refuse a size that needs more memory than is available.

    Args:
        needed: The estimate, in bytes.
        what: What needs it, naming the parameters (e.g. ``"width_mult 1000 (4.2e12
            parameters)"``).
        advice: Which flags to lower.

    Raises:
        MemoryLimitError: a ``ValueError``, ``"{what} needs about N GB of memory; this machine
            has M GB available: {advice}"``.
    """
    have = available_memory()
    if needed > have:
        raise MemoryLimitError(f"{what} needs about {format_bytes(needed)} of memory; this machine has "
                         f"{format_bytes(have)} available: {advice}")
