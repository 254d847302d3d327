"""How far a long loop has got, readable wherever it is shown: the one progress mechanism of
training (``RunLog``, a run's log), evaluation and int8 evaluation (``track``).

On a terminal a ``tqdm`` bar; anywhere else (a log file, a pipe, CI) one plain line every ``every``
steps and at the last, never the carriage returns a bar is drawn with, which a log would hold once
per redraw.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

from mobilenets.fileio import write_text
from mobilenets.tables import TABLE_WIDTH

T = TypeVar("T")

#: Lines a loop prints off a terminal when no ``every`` is given: one per tenth of it.
DEFAULT_LINES = 10


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (where a redrawn bar reads well)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """Progress of a counted loop: a bar on a terminal, one line every ``every`` steps elsewhere.

    Args:
        total: Steps in the whole loop.
        desc: What the loop does, leading the bar or each line (e.g. ``"eval"``).
        unit: What a step is (``"step"``, ``"batch"``). Default ``"step"``.
        every: Steps between lines off a terminal. Default: a tenth of ``total`` (at least 1).
        initial: Steps already done (a resumed run). Default 0.
        stream: Where to write. Default ``sys.stderr`` (stdout keeps a command's result).
        enabled: False: show nothing (e.g. on every process but the first). Default True.
        leave: Keep the finished bar on the terminal. Default True.

    Example:
        >>> p = Progress(4, "eval", unit="batch", every=2, stream=sys.stdout)
        >>> for _ in range(4):
        ...     p.update()
        eval: 2/4 batches
        eval: 4/4 batches
    """

    def __init__(self, total: int, desc: str, *, unit: str = "step", every: int | None = None,
                 initial: int = 0, stream: TextIO | None = None, enabled: bool = True,
                 leave: bool = True):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.every = max(1, every or math.ceil(total / DEFAULT_LINES))
        self.stream = stream or sys.stderr
        self.enabled, self.bar = enabled, None
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, leave=leave,
                            dynamic_ncols=True, file=self.stream)

    def update(self, done: int | None = None, line: Callable[[], str] | None = None,
               **postfix) -> None:
        """Record that ``done`` steps are finished (default: one more than before).

        Args:
            done: Steps finished so far. Default: one more.
            line: Off a terminal, builds the line printed at every ``every``-th step and the
                last. Default: ``"DESC: DONE/TOTAL UNITs"``.
            **postfix: On a terminal, figures shown after the bar (e.g. ``loss="0.52"``).
        """
        if not self.enabled:
            return
        done = self.done + 1 if done is None else done
        if self.bar is not None:
            self.bar.update(done - self.done)
            if postfix:
                self.bar.set_postfix(postfix)
        elif done % self.every == 0 or done == self.total:
            units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
            print(line() if line else f"{self.desc}: {done}/{self.total} {units}",
                  file=self.stream, flush=True)
        self.done = done

    def write(self, text: str) -> None:
        """Print a line of text without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar (nothing to do for lines)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunLog:
    """Progress and per-epoch metrics of a run (``engine.loop.fit``), on the main process only.

    Epoch records go to ``metrics.jsonl`` (and TensorBoard when asked). Progress, on stdout, is
    a ``Progress``: a bar on a terminal, one line every ``cfg.log_every`` steps otherwise.

    Args:
        out_dir: The run folder.
        cfg: The run's ``RunConfig`` (``progress``, ``log_every``, ``tensorboard``).
        enabled: False on every process but the main one.
        total: Steps in the whole run.
        initial: Steps done before (a resumed run).
        desc: The bar's label.
    """

    def __init__(self, out_dir: Path, cfg, enabled: bool, total: int, initial: int,
                 desc: str):
        self.path, self.enabled, self.tb = out_dir / "metrics.jsonl", enabled, None
        self.cfg, self.total = cfg, total
        if enabled and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package: it comes with "
                                 "scripts/setup.sh (requirements.txt), or pip install "
                                 "'mobilenets[tensorboard]'") from None
            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        self.progress = Progress(total, desc, every=cfg.log_every, initial=initial,
                                 stream=sys.stdout, enabled=enabled and cfg.progress)

    def step(self, step: int, epoch: int, losses: dict[str, float], lr: float,
             images_per_second: float) -> None:
        def line() -> str:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in losses.items() if k != "loss")
            return (f"step {step}/{self.total} epoch {epoch + 1}: loss {losses['loss']:.4f}"
                    + (f" ({parts})" if parts else "")
                    + f", lr {lr:.4g}, {images_per_second:.0f} images/s")
        self.progress.update(step, line, loss=f"{losses['loss']:.3f}", lr=f"{lr:.4g}",
                             img_s=f"{images_per_second:.0f}")

    def epoch(self, record: dict, history: list[dict]) -> None:
        """Log ``record``, the last of ``history``: ``metrics.jsonl`` is rewritten atomically
        with the whole history, so it holds each epoch once, whenever a run was killed."""
        if not self.enabled:
            return
        write_text(self.path, "\n".join(json.dumps(r) for r in history))
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()
        if self.cfg.progress:
            # One "name value" per field the file has, within TABLE_WIDTH columns as every
            # report (a slow run's seconds take more digits): continued lines are indented.
            lines = [f"epoch {record['epoch']:g}:"]
            for k, v in record.items():
                if k in ("epoch", "step", "eval_seconds") or not isinstance(v, (int, float)):
                    continue
                part, first = f"{k} {v:.4g}", lines[-1].endswith(":")
                if len(lines[-1]) + len(part) + 3 > TABLE_WIDTH:
                    lines[-1] += "" if first else ","
                    lines.append("  " + part)
                else:
                    lines[-1] += (" " if first else ", ") + part
            for line in lines:
                self.progress.write(line)

    def close(self) -> None:
        self.progress.close()


def track(items: Iterable[T], total: int, desc: str, **kwargs) -> Iterator[T]:
    """Yield ``items``, showing their progress (``Progress(total, desc, **kwargs)``)."""
    progress = Progress(total, desc, **kwargs)
    try:
        for item in items:
            yield item
            progress.update()
    finally:
        progress.close()


__all__ = ["DEFAULT_LINES", "Progress", "RunLog", "is_terminal", "track"]
