"""One validation per value: the ranges of the values the library and the command line share,
and the checks every layer uses (a choice among names, a count).

A value's range is written once, in ``RANGES``: the library's entry points check it with
``check_range`` (``TrainConfig.validate``, ``BatchTransform``, ...) and the command line turns
the same record into its flags' parsers (``cli.common.harden_numeric_flags``), so a flag and
the field it sets refuse the same values with the same words. This module sits below every
layer, as ``fileio`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: The largest seed: NumPy's legacy range, which keeps every derived seed (``seed * 100_003 +
#: epoch``, ...) inside the 64-bit integers that torch's generators take.
MAX_SEED = 2 ** 32 - 1


@dataclass(frozen=True)
class Range:
    """The values a number may take: a finite ``kind`` (``int`` or ``float``; never a bool) from
    ``low`` to ``high`` (each None for no bound; ``low`` excluded when ``low_open``).

    Attributes:
        kind: ``int`` (an int only) or ``float`` (any int or float).
        low: The smallest value, or None.
        high: The largest value, or None.
        low_open: ``low`` itself is refused. Default False.
        what: The range in words, for messages: ``"a number in (0, 2]"``.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    what: str = ""

    def holds(self, value) -> bool:
        """Whether ``value`` is in the range."""
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, name: str, value):
        """``value`` if it is in the range.

        Raises:
            ValueError: ``"{name} must be {what}, got {value!r}"``.
        """
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.what}, got {value!r}")
        return value


#: An integer >= 1: a count or a size.
COUNT = Range(int, 1, what="an integer >= 1")
#: Any finite number.
FINITE = Range(float, what="a finite number")

#: The range of each shared value, by its name (the config field and the flag's ``dest``).
RANGES: dict[str, Range] = {
    **{n: Range(int, 0, MAX_SEED, what=f"an integer from 0 to {MAX_SEED}")
       for n in ("seed", "label_seed")},
    **{n: Range(int, 0, what="an integer >= 0") for n in (
        "min_objects", "float_layers", "min_photos", "max_level", "unlabeled", "negatives",
        "noisy_per_class")},
    **{n: Range(int, 32, what="an integer >= 32") for n in ("resolution", "teacher_resolution")},
    **{n: Range(float, 0, low_open=True, what="a finite number > 0") for n in (
        "width_mult", "epochs", "lr", "temperature", "tolerance", "latency_ms", "max_params",
        "max_madds", "refine_km", "far")},
    **{n: Range(float, 0, 1, low_open=True, what="a number in (0, 1]") for n in (
        "label_fraction", "min_crop_area")},
    # The evaluation view's side over the image side: > 1 puts the image on a zero border.
    "eval_crop": Range(float, 0, 2, low_open=True, what="a number in (0, 2]"),
    "min_agreement": Range(float, 0, 1, what="a share in [0, 1]"),
}


def check_range(name: str, value, rule: str | Range | None = None):
    """``value`` if it is in its range: ``RANGES[name]``, or the range ``rule`` names or is.

    Args:
        name: The value's name, as the message shows it.
        value: The value.
        rule: A key of ``RANGES`` (e.g. ``"seed"`` for ``label_seed``) or a ``Range``. Default:
            ``name``.

    Raises:
        ValueError: naming ``name`` and the range.
    """
    rule = RANGES[rule or name] if not isinstance(rule, Range) else rule
    return rule.check(name, value)


def check_int(name: str, value, low: int = 1) -> int:
    """``value`` if it is an integer >= ``low`` (not a bool).

    Raises:
        ValueError: ``"{name} must be an integer >= {low}, got {value!r}"``.
    """
    return Range(int, low, what=f"an integer >= {low}").check(name, value)


def check_choice(name: str, value, choices):
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming ``name`` and listing the choices.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value
