"""Evaluation metrics as pure functions and small accumulators: top-k counts, a confusion matrix,
and an accumulator that combines them with the loss and can be summed across processes (the
metrics several tasks share; a task's own metrics live in its folder, e.g.
``tasks.faces.metrics``).

Nothing here touches a model or a data loader: a trainer or an evaluation loop feeds in logits and
targets batch by batch and reads the result at the end. Ties between logits are broken towards
the lower class id everywhere (as ``torch.argmax`` does), so the top-1 count always equals the
confusion matrix's diagonal.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mobilenets.checks import check_int

#: Leading entries of ``EvalAccumulator.state_tensor()``, before the flattened confusion matrix.
STATE_FIELDS = ("num_samples", "top1", "top5", "loss_sum", "loss_samples")


def _check_targets(targets, n: int, num_classes: int, other: str) -> Tensor:
    """Validate 1-D integer class ids, one per row of ``other``, each in [0, num_classes)."""
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be a torch.Tensor of class ids, got "
                         f"{type(targets).__name__}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer class ids, got dtype {targets.dtype}")
    if targets.ndim != 1:
        raise ValueError(f"targets must be 1-D (N,), got shape {tuple(targets.shape)}")
    if targets.shape[0] != n:
        raise ValueError(f"targets has {targets.shape[0]} entries but {other} has {n} rows")
    if n:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"targets must be class ids in [0, {num_classes}), found {bad}")
    return targets


def _check_logits(logits, num_classes: int | None = None, name: str = "logits") -> Tensor:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, num_classes), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class column, got shape "
                         f"{tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"{name} has {logits.shape[1]} class columns, expected num_classes="
                         f"{num_classes}")
    return logits


def _check_ks(ks) -> tuple[int, ...]:
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks must be a sequence of integers >= 1, got {ks!r}") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1, got {ks!r}")
    return ks


def _ranked(logits: Tensor, kmax: int) -> Tensor:
    """The ``kmax`` highest-scoring class ids per row, ties to the lower id (as ``argmax``).

    A stable descending sort, not ``torch.topk``, whose order among equal values is unspecified.
    """
    return torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :kmax]


def topk_correct(logits: Tensor, targets: Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """How many samples have their target among the ``k`` highest logits, for each ``k``.

    Args:
        logits: Scores of shape (N, K), any float dtype, on any device.
        targets: Class ids of shape (N,), integers in [0, K), on the same device as ``logits``.
        ks: The ``k`` values, each an integer >= 1. Default (1, 5). A ``k`` above the number of
            classes K is capped at K (every sample is then correct), but keeps its key.

    Returns:
        ``{k: count}`` for every ``k`` in ``ks``; counts are Python ints in [0, N].

    Raises:
        ValueError: naming ``logits``, ``targets`` or ``ks`` for a bad shape, dtype or value.

    Example:
        >>> topk_correct(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]), torch.tensor([2, 0]))
        {1: 1, 5: 2}
    """
    ks = _check_ks(ks)
    logits = _check_logits(logits)
    n, num_classes = logits.shape
    targets = _check_targets(targets, n, num_classes, "logits")
    kmax = min(max(ks), num_classes)
    hits = _ranked(logits, kmax) == targets.to(logits.device)[:, None]  # (N, kmax), <= 1 per row
    # A target appears at most once per row, so the running sum marks "correct within the first j".
    within = hits.cumsum(dim=1).sum(dim=0).cpu()
    return {k: int(within[min(k, num_classes) - 1]) for k in ks}


class ConfusionMatrix:
    """A K x K count matrix accumulated over batches: rows are true classes, columns predictions.

    Args:
        num_classes: K, an integer >= 1.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(torch.tensor([0, 2, 2]), torch.tensor([0, 1, 2]))
        >>> cm.matrix.tolist()
        [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
        >>> cm.accuracy()
        0.6666666666666666
    """

    def __init__(self, num_classes: int):
        self.num_classes = check_int("num_classes", num_classes)
        # Kept on the CPU: each update moves just the N predictions and targets there.
        self._counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Zero every count."""
        self._counts.zero_()

    def update(self, logits_or_preds: Tensor, targets: Tensor) -> None:
        """Add one batch.

        Args:
            logits_or_preds: Either logits of shape (N, K), whose argmax (lowest id among ties)
                is the prediction, or predicted class ids of shape (N,), integers in [0, K).
            targets: True class ids of shape (N,), integers in [0, K).

        Raises:
            ValueError: naming ``logits_or_preds`` or ``targets`` for a bad shape, dtype or value.
        """
        x = logits_or_preds
        if not isinstance(x, Tensor):
            raise ValueError(f"logits_or_preds must be a torch.Tensor, got {type(x).__name__}")
        k = self.num_classes
        if x.ndim == 2:
            preds = _check_logits(x, k, "logits_or_preds").argmax(dim=1)
        elif x.ndim == 1:
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise ValueError(f"logits_or_preds of shape (N,) must hold integer class ids, got "
                                 f"dtype {x.dtype}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= k):
                raise ValueError(f"logits_or_preds must be class ids in [0, {k}), found "
                                 f"{int(x.min()) if int(x.min()) < 0 else int(x.max())}")
            preds = x
        else:
            raise ValueError(f"logits_or_preds must be logits (N, {k}) or class ids (N,), got "
                             f"shape {tuple(x.shape)}")
        targets = _check_targets(targets, preds.shape[0], k, "logits_or_preds")
        flat = targets.cpu().long() * k + preds.cpu().long()
        # index_add_, not bincount(minlength=K*K): no K*K temporary per batch (1M for ImageNet).
        self._counts.view(-1).index_add_(0, flat, torch.ones_like(flat))

    @property
    def matrix(self) -> Tensor:
        """The counts, a (K, K) int64 CPU tensor (a copy): ``matrix[t, p]`` samples of class
        ``t`` predicted as ``p``."""
        return self._counts.clone()

    @property
    def num_samples(self) -> int:
        """Samples seen so far."""
        return int(self._counts.sum())

    def support(self) -> Tensor:
        """Samples per true class, a (K,) int64 tensor (the row sums)."""
        return self._counts.sum(dim=1)

    def per_class_accuracy(self) -> Tensor:
        """Recall per class, a (K,) float64 tensor in [0, 1]; NaN for a class without samples."""
        support = self.support().double()
        return self._counts.diagonal().double() / support  # 0 / 0 -> NaN, as documented

    def accuracy(self) -> float:
        """Fraction of samples predicted correctly, in [0, 1]; NaN before any sample."""
        total = self.num_samples
        return float(self._counts.diagonal().sum()) / total if total else float("nan")


class EvalAccumulator:
    """Everything an evaluation reports, accumulated over batches: loss, top-1 and top-5 counts,
    and a confusion matrix.

    For distributed evaluation, each process accumulates its shard, then::

        t = acc.state_tensor(device)               # one float64 tensor with every count
        torch.distributed.all_reduce(t)            # sum over processes
        acc.load_state_tensor(t)                   # now acc holds the totals on every process

    Args:
        num_classes: K, an integer >= 1. With K < 5 the top-5 count is capped at K classes
            (every sample counts as correct), as ``topk_correct`` does.
    """

    def __init__(self, num_classes: int):
        self.num_classes = check_int("num_classes", num_classes)
        self.confusion = ConfusionMatrix(num_classes)
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self.num_samples = 0
        self.top1 = 0
        self.top5 = 0
        self.loss_sum = 0.0
        self.loss_samples = 0  # samples whose batch came with a loss
        self.confusion.reset()

    def update(self, logits: Tensor, targets: Tensor, loss: float | Tensor | None = None) -> None:
        """Add one batch.

        Args:
            logits: Scores of shape (N, K).
            targets: True class ids of shape (N,), integers in [0, K).
            loss: Optional. A scalar (float or 0-d tensor) is taken as the batch's mean loss and
                weighted by N, as ``nn.CrossEntropyLoss()`` returns it; a 1-D tensor of N values
                is taken as per-sample losses (``reduction="none"``). Default None: the batch
                does not count towards the mean loss.

        Raises:
            ValueError: naming ``logits``, ``targets`` or ``loss`` for a bad shape, dtype or value.
        """
        logits = _check_logits(logits, self.num_classes)
        n = logits.shape[0]
        _check_targets(targets, n, self.num_classes, "logits")
        if loss is not None:
            if isinstance(loss, Tensor):
                if loss.ndim == 0:
                    batch_loss = float(loss.detach()) * n
                elif loss.ndim == 1 and loss.shape[0] == n:
                    batch_loss = float(loss.detach().double().sum())
                else:
                    raise ValueError(f"loss must be a scalar (batch mean) or shape ({n},) "
                                     f"(per sample), got shape {tuple(loss.shape)}")
            elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
                batch_loss = float(loss) * n
            else:
                raise ValueError(f"loss must be a float, a tensor or None, got "
                                 f"{type(loss).__name__}")
        counts = topk_correct(logits, targets, (1, 5))
        self.confusion.update(logits, targets)
        self.num_samples += n
        self.top1 += counts[1]
        self.top5 += counts[5]
        if loss is not None:
            self.loss_sum += batch_loss
            self.loss_samples += n

    # -- distributed reduction -------------------------------------------------------------------

    def state_tensor(self, device: torch.device | str | None = None) -> Tensor:
        """Every count in one 1-D float64 tensor, ready for ``torch.distributed.all_reduce``.

        Args:
            device: Where to put it (NCCL needs the process's GPU). Default None: the CPU.

        Returns:
            ``[num_samples, top1, top5, loss_sum, loss_samples, *confusion.flatten()]``
            (``STATE_FIELDS``, then K*K entries). float64 holds counts exactly up to 2**53.
        """
        head = torch.tensor([self.num_samples, self.top1, self.top5, self.loss_sum,
                             self.loss_samples], dtype=torch.float64)
        return torch.cat([head, self.confusion._counts.view(-1).double()]).to(device or "cpu")

    def load_state_tensor(self, t: Tensor) -> None:
        """Replace this accumulator's state with ``t``, as returned by ``state_tensor`` (typically
        after summing it across processes).

        Args:
            t: A 1-D tensor of ``5 + num_classes**2`` entries, on any device.

        Raises:
            ValueError: naming ``t`` if its size does not match ``num_classes``.
        """
        size = len(STATE_FIELDS) + self.num_classes ** 2
        if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != size:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a 1-D tensor of {size} entries (5 + num_classes**2 with "
                             f"num_classes={self.num_classes}), got {shape}")
        t = t.detach().to("cpu", torch.float64)
        counts = t.round().long()  # everything but loss_sum is an integer count
        self.num_samples, self.top1, self.top5 = (int(v) for v in counts[:3])
        self.loss_sum = float(t[3])
        self.loss_samples = int(counts[4])
        self.confusion._counts.copy_(counts[5:].view(self.num_classes, self.num_classes))

    def merge(self, other: EvalAccumulator) -> EvalAccumulator:
        """Add ``other``'s counts to this one's (in process; for several processes use
        ``state_tensor``). Returns self.

        Raises:
            ValueError: naming ``other`` if it is not an ``EvalAccumulator`` of the same K.
        """
        if not isinstance(other, EvalAccumulator) or other.num_classes != self.num_classes:
            raise ValueError(f"other must be an EvalAccumulator with num_classes="
                             f"{self.num_classes}, got {other!r}")
        self.load_state_tensor(self.state_tensor() + other.state_tensor())
        return self

    def __repr__(self) -> str:
        return f"EvalAccumulator(num_classes={self.num_classes}, num_samples={self.num_samples})"

    # -- results ---------------------------------------------------------------------------------

    def result(self, class_names: Sequence[str] | None = None) -> dict:
        """The metrics so far, JSON-ready (undefined values are None, never NaN).

        Args:
            class_names: One name per class, in class-id order. Default None: ``"0"``, ``"1"``...

        Returns:
            A dict with
            ``top1``, ``top5``: accuracy in percent (None before any sample);
            ``loss``: mean loss over the samples whose batch came with one (None if none did);
            ``num_samples``: int;
            ``per_class``: one ``{"name", "accuracy" (percent, None without samples), "support"}``
            per class;
            ``confusion_matrix``: K lists of K ints, rows true class, columns predicted.

        Raises:
            ValueError: naming ``class_names`` if it does not hold exactly K names.
        """
        names = _class_names(class_names, self.num_classes)
        n = self.num_samples
        pct = lambda c, total: 100.0 * c / total if total else None  # noqa: E731
        support = self.confusion.support().tolist()
        diag = self.confusion._counts.diagonal().tolist()
        return {
            "top1": pct(self.top1, n),
            "top5": pct(self.top5, n),
            "loss": self.loss_sum / self.loss_samples if self.loss_samples else None,
            "num_samples": n,
            "per_class": [{"name": name, "accuracy": pct(d, s), "support": s}
                          for name, d, s in zip(names, diag, support)],
            "confusion_matrix": self.confusion._counts.tolist(),
        }


def _class_names(class_names, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(class_names, str):
        raise ValueError("class_names must be a sequence of names, got a single string")
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names, expected {num_classes}")
    return names


def format_report(result: dict, class_names: Sequence[str] | None = None,
                  max_matrix_classes: int = 30) -> str:
    """A readable text report of an ``EvalAccumulator.result()``.

    Args:
        result: The dict ``EvalAccumulator.result()`` returns (its keys are required).
        class_names: Names to print instead of those in ``result["per_class"]``; exactly one
            per class. Default None: use the result's.
        max_matrix_classes: The confusion matrix is printed only up to this many classes (a
            1000-class one is a megabyte of digits); above it a note says so. Default 30.

    Returns:
        Summary lines (samples, top-1, top-5, loss), a per-class table (name, accuracy,
        support), then the confusion matrix: rows labelled ``id name``, columns by class id
        (short headers keep it narrow), rows true class, columns predicted.

    Raises:
        ValueError: naming the missing key of ``result``, or ``class_names`` of the wrong length.
    """
    for key in ("top1", "top5", "loss", "num_samples", "per_class", "confusion_matrix"):
        if key not in result:
            raise ValueError(f"result is missing key {key!r}; pass EvalAccumulator.result()")
    per_class = result["per_class"]
    k = len(per_class)
    names = ([str(p["name"]) for p in per_class] if class_names is None
             else _class_names(class_names, k))
    fmt_pct = lambda v: "-" if v is None else f"{v:.2f}%"  # noqa: E731
    out = [f"samples: {result['num_samples']:,}",
           f"top-1:   {fmt_pct(result['top1'])}",
           f"top-5:   {fmt_pct(result['top5'])}",
           f"loss:    {'-' if result['loss'] is None else format(result['loss'], '.4f')}",
           "",
           "per class:"]
    name_w = max([5, *(len(n) for n in names)])
    sup_w = max([7, *(len(f"{p['support']:,}") for p in per_class)])
    out.append(f"  {'class':<{name_w}}  {'accuracy':>8}  {'support':>{sup_w}}")
    for name, p in zip(names, per_class):
        out.append(f"  {name:<{name_w}}  {fmt_pct(p['accuracy']):>8}  {p['support']:>{sup_w},}")
    out.append("")
    if k > max_matrix_classes:
        out.append(f"confusion matrix: {k} classes, above max_matrix_classes="
                   f"{max_matrix_classes}; see result['confusion_matrix']")
        return "\n".join(out)
    cm = result["confusion_matrix"]
    out.append("confusion matrix (rows: true class, columns: predicted class id):")
    labels = [n if n == str(i) else f"{i} {n}" for i, n in enumerate(names)]  # no "0 0"
    label_w = max(len(s) for s in labels)
    cell_w = max([len(str(k - 1)), *(len(str(v)) for row in cm for v in row)])
    out.append(" " * (label_w + 3) + " ".join(f"{i:>{cell_w}}" for i in range(k)))
    for label, row in zip(labels, cm):
        out.append(f"  {label:<{label_w}} " + " ".join(f"{v:>{cell_w}}" for v in row))
    return "\n".join(out)
