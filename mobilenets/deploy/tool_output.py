"""The timings that the phone runtimes' own benchmark tools print, read from their saved output.

- LiteRT's (TensorFlow Lite's) ``benchmark_model`` (``tensorflow/lite/tools/benchmark``): each
  run logs ``Graph: [FILE]``, ``Num threads: [N]`` and, at its end, ``Inference timings in us:
  Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): X`` (older builds, and
  the Android benchmark app in logcat: ``Average inference timings in us: Warmup: ..., Init:
  ..., Inference: X``); the lines may carry a prefix (``INFO:``, logcat's). The latency is the
  mean of the regular runs, X.
- ExecuTorch's ``executor_runner`` (``examples/portable/executor_runner``; XNNPACK's
  ``xnn_executor_runner`` is the same program): each run logs ``Model file FILE is loaded.``,
  ``Resetting threadpool with num threads = N``, one ``Iteration i of n: X ms`` per execution
  (recent builds) and ``Model executed successfully n time(s) in T ms.``. The latency is the
  median of the iterations where they are printed, else T / n.

Several runs may be saved in one file, one after another. ``parse_tool_output`` reads either
tool's and returns one ``Timing`` per run; ``mobilenets latency fit`` takes such files beside
CSVs.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

#: Where each tool's lines say what matters; searched anywhere in a line, so that the prefixes
#: the tools and logcat put before them (``INFO:``, ``I 00:00:00.1 executorch:...]``) do not
#: matter.
_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_LITERT = {
    "start": re.compile(r"\bSTARTING!"),
    "graph": re.compile(r"\bGraph: \[(.*)\]"),
    "threads": re.compile(r"\bNum threads: \[(-?\d+)\]"),
    "stats": re.compile(r"\bcount=(\d+) .*\bavg=" + _NUMBER),
    "timings": re.compile(r"\bInference timings in us: .*Inference \(avg\): " + _NUMBER),
    "old_timings": re.compile(r"\bAverage inference timings in us: .*\b(?:Inference|no stats): "
                              + _NUMBER),
}
_EXECUTORCH = {
    "threads": re.compile(r"\bResetting threadpool with num threads = (-?\d+)"),
    "model": re.compile(r"\bModel file (.*) is loaded\."),
    "iteration": re.compile(r"\bIteration \d+ of \d+: " + _NUMBER + " ms"),
    "done": re.compile(r"\bModel executed successfully (\d+) time\(s\) in " + _NUMBER + " ms"),
}


@dataclass
class Timing:
    """One run of a benchmark tool: the model file it timed and its batch-1 latency.

    Attributes:
        model_file: The path the tool was given (as it printed it).
        latency_ms: Mean (``benchmark_model``) or median (``executor_runner``) ms per call.
        threads: The thread count it printed, or None.
        tool: ``"benchmark_model"`` or ``"executor_runner"``.
        line: The line (1-based) where the run's result is printed.
        runs: How many timed calls the figure summarises, where printed.
    """

    model_file: str
    latency_ms: float
    threads: int | None
    tool: str
    line: int
    runs: int | None = None


def is_tool_output(text: str) -> bool:
    """Whether ``text`` looks like the output of ``benchmark_model`` or ``executor_runner``."""
    return any(p.search(line) for line in text.splitlines()
               for p in (_LITERT["graph"], _LITERT["timings"], _LITERT["old_timings"],
                         _EXECUTORCH["model"], _EXECUTORCH["done"]))


def parse_benchmark_model(text: str) -> list[Timing]:
    """Every run in the saved output of LiteRT's ``benchmark_model``, in order.

    Raises:
        ValueError: for a run that names its graph but prints no timing (it failed or was cut
            off), naming the line where the run starts.
    """
    runs, current = [], None

    def finish() -> None:
        if current and current.get("graph") is not None:
            if current.get("latency_us") is None:
                raise ValueError(f"line {current['start']}: the benchmark_model run of "
                                 f"{current['graph']} prints no inference timing (did it fail "
                                 "or stop early?)")
            runs.append(Timing(current["graph"], current["latency_us"] / 1000.0,
                               current.get("threads"), "benchmark_model", current["line"],
                               current.get("count")))

    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if _LITERT["start"].search(line):
            finish()
            current = {"start": number}
            continue
        current = current if current is not None else {"start": number}
        if m := _LITERT["graph"].search(line):
            if current.get("graph") is not None:  # a second run without STARTING!
                finish()
                current = {"start": number}
            current["graph"] = m.group(1).strip()
        elif m := _LITERT["threads"].search(line):
            current["threads"] = int(m.group(1)) if int(m.group(1)) > 0 else None
        elif m := _LITERT["stats"].search(line):  # warm-up first, then the regular runs
            current["count"] = int(m.group(1))
        elif m := (_LITERT["timings"].search(line) or _LITERT["old_timings"].search(line)):
            current["latency_us"], current["line"] = float(m.group(1)), number
    finish()
    return runs


def parse_executor_runner(text: str) -> list[Timing]:
    """Every run in the saved output of ExecuTorch's ``executor_runner``, in order.

    Raises:
        ValueError: for a run that loads a model but prints no timing, naming its line.
    """
    runs, current, threads = [], None, None

    def finish(number: int) -> None:
        if current is None:
            return
        if not current["iterations"] and current.get("total") is None:
            raise ValueError(f"line {current['start']}: the executor_runner run of "
                             f"{current['file']} prints no timing (did it fail, or is it a "
                             "build that does not time its executions?)")
        iterations = current["iterations"]
        ms = (statistics.median(iterations) if iterations
              else current["total"] / max(current["count"], 1))
        runs.append(Timing(current["file"], ms, current["threads"], "executor_runner",
                           current.get("line", number),
                           len(iterations) or current.get("count")))

    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if m := _EXECUTORCH["threads"].search(line):
            threads = int(m.group(1)) if int(m.group(1)) > 0 else None
        elif m := _EXECUTORCH["model"].search(line):
            finish(number)
            current = {"file": m.group(1).strip(), "start": number, "threads": threads,
                       "iterations": []}
            threads = None
        elif current is not None and (m := _EXECUTORCH["iteration"].search(line)):
            current["iterations"].append(float(m.group(1)))
        elif current is not None and (m := _EXECUTORCH["done"].search(line)):
            current.update(count=int(m.group(1)), total=float(m.group(2)), line=number)
            finish(number)
            current = None
    finish(0)
    return runs


def parse_tool_output(text: str) -> list[Timing]:
    """The runs in the saved output of either tool (both, if one file holds both).

    Raises:
        ValueError: if the text holds neither tool's output, or a run without a timing.
    """
    runs = parse_benchmark_model(text) + parse_executor_runner(text)
    if not runs:
        raise ValueError("holds no run of benchmark_model or executor_runner (no 'Graph: [...]' "
                         "or 'Model file ... is loaded.' line with a timing after it)")
    return sorted(runs, key=lambda t: t.line)
