"""Face metrics: average precision for multi-label outputs (face attributes, Table 12) and the
true accept rate at a false accept rate for verification pairs (face embeddings, Table 14).

Pure functions of scores and labels, as ``engine.metrics``'s are: nothing here touches a model.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_score_label_pair(scores, labels, ndim: int) -> tuple[Tensor, Tensor]:
    """Validate ``scores`` and 0/1 ``labels`` of the same shape with ``ndim`` dimensions."""
    shape = "(N,)" if ndim == 1 else "(N, A)"
    for name, t in (("scores", scores), ("labels", labels)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D {shape}, got shape {tuple(t.shape)}")
    if scores.shape != labels.shape:
        raise ValueError(f"scores has shape {tuple(scores.shape)} but labels has "
                         f"{tuple(labels.shape)}")
    if scores.is_complex() or not torch.isfinite(scores.double()).all():
        raise ValueError("scores must be finite real numbers")
    if labels.numel() and not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must hold only 0 and 1 (1 = the attribute is present)")
    return scores.detach().cpu().double(), labels.detach().cpu().bool()


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision of one binary label from scores, as scikit-learn's
    ``average_precision_score``: ``AP = sum_n (R_n - R_(n-1)) * P_n`` over the distinct score
    thresholds from high to low, with no interpolation of the precision-recall curve.

    Samples with equal scores are one threshold: they are accepted together, so the order of
    tied samples does not change the result.

    Args:
        scores: Shape (N,): higher means "more likely positive" (logits or probabilities).
        labels: Shape (N,): 0 or 1 (any dtype: bool, int or float).

    Returns:
        AP in [0, 1]; NaN when no label is positive (recall is undefined; scikit-learn warns and
        returns 0 there; NaN lets callers leave such an attribute out of a mean).

    Raises:
        ValueError: naming ``scores`` or ``labels`` for a wrong shape, non-finite score or a label
            other than 0/1.

    Example:
        >>> average_precision(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.8333333333333333
    """
    scores, labels = _check_score_label_pair(scores, labels, 1)
    num_pos = int(labels.sum())
    if num_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].double()
    tp = torch.cumsum(y, 0)
    # The last sample of each run of equal scores closes a threshold.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tp = tp[last]
    seen = torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    precision, recall = tp / seen, tp / num_pos
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_step * precision).sum())


def average_precision_per_column(scores: Tensor, labels: Tensor) -> Tensor:
    """``average_precision`` of each column of a multi-label problem.

    Args:
        scores: Shape (N, A): one score per sample and attribute.
        labels: Shape (N, A): 0 or 1.

    Returns:
        A float64 tensor (A,) of AP values in [0, 1], NaN for a column with no positive label.

    Raises:
        ValueError: naming ``scores`` or ``labels`` (see ``average_precision``).
    """
    scores, labels = _check_score_label_pair(scores, labels, 2)
    return torch.tensor([average_precision(scores[:, a], labels[:, a])
                         for a in range(scores.shape[1])], dtype=torch.float64)


def mean_average_precision(scores: Tensor, labels: Tensor) -> float:
    """Mean over attributes of their average precision (Table 12's "mean AP").

    Columns without a positive label (AP undefined) are left out of the mean.

    Args:
        scores: Shape (N, A).
        labels: Shape (N, A), 0 or 1.

    Returns:
        Mean AP in [0, 1]; NaN if no column has a positive label.

    Raises:
        ValueError: naming ``scores`` or ``labels`` (see ``average_precision``).
    """
    ap = average_precision_per_column(scores, labels)
    defined = ap[~torch.isnan(ap)]
    return float(defined.mean()) if len(defined) else float("nan")


def tar_at_far(positive_scores: Tensor, negative_scores: Tensor, far: float = 1e-4) -> dict:
    """True accept rate at a false accept rate, for verification pairs (Table 14's "1e-4 accuracy").

    A pair is accepted when its similarity score is strictly above a threshold. With the ``M``
    negative (different-identity) scores sorted from high to low, at most ``k = floor(far * M)``
    of them may be accepted, so the threshold is the ``(k+1)``-th highest negative score: every
    negative above it is accepted (at most ``k``) and every pair tied with it is rejected. Ties
    therefore never push the false accept rate above ``far``; a positive pair tied with the
    threshold counts as rejected (the conservative choice).

    Args:
        positive_scores: Shape (P,): similarities of same-identity pairs, P >= 1.
        negative_scores: Shape (M,): similarities of different-identity pairs. M must be at least
            ``ceil(1 / far)`` (10,000 for 1e-4): with fewer, not even one false accept can be
            allowed and the rate cannot be measured.
        far: Target false accept rate, in (0, 1). Default 1e-4 (Table 14).

    Returns:
        ``{"tar": accepted positives / P, "far": accepted negatives / M (<= far), "threshold":
        the score threshold, "far_target": far, "num_positive": P, "num_negative": M}``.

    Raises:
        ValueError: naming ``far``, ``positive_scores`` or ``negative_scores`` for a bad value,
            shape, non-finite score, or too few negative pairs.

    Example:
        >>> neg = torch.linspace(0, 1, 10_000)   # the highest negative is 1.0, the next 0.9999
        >>> tar_at_far(torch.tensor([0.5, 1.0, 2.0]), neg)["tar"]   # 1.0 and 2.0 are above 0.9999
        0.6666666666666666
    """
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 < far < 1:
        raise ValueError(f"far must be a number in (0, 1), got {far!r}")
    pairs = {}
    for name, t in (("positive_scores", positive_scores), ("negative_scores", negative_scores)):
        if not isinstance(t, Tensor) or t.ndim != 1:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 1-D torch.Tensor, got {shape}")
        if t.is_complex() or not torch.isfinite(t.double()).all():
            raise ValueError(f"{name} must be finite real numbers")
        pairs[name] = t.detach().cpu().double()
    pos, neg = pairs["positive_scores"], pairs["negative_scores"]
    if len(pos) == 0:
        raise ValueError("positive_scores is empty: need at least one same-identity pair")
    allowed = math.floor(far * len(neg) + 1e-9)  # 1e-4 * 10_000 is 1.0000000000000002 or 0.9999..
    if allowed < 1:
        need = math.ceil(1 / far - 1e-9)
        raise ValueError(f"negative_scores has {len(neg)} pairs: measuring a false accept rate of "
                         f"{far:g} needs at least {need:,} negative pairs")
    threshold = float(torch.sort(neg, descending=True).values[allowed])
    return {"tar": float((pos > threshold).double().mean()),
            "far": float((neg > threshold).double().mean()),
            "threshold": threshold, "far_target": far,
            "num_positive": len(pos), "num_negative": len(neg)}
