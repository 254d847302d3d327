"""The paper's optimizer, parameter groups and learning-rate schedules, and EMA weights."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Optimizer

from mobilenets.engine.config import RunConfig


class RMSpropTF(Optimizer):
    """RMSprop as TensorFlow computes it; the paper trained MobileNets with it in TensorFlow.

    Differs from ``torch.optim.RMSprop`` in three ways that matter at the paper's epsilon of 1.0:
    the mean square starts at 1 (not 0), epsilon sits inside the square root, and the learning
    rate is applied inside the momentum buffer (so a learning-rate change does not rescale the
    momentum already accumulated)::

        ms  = decay * ms + (1 - decay) * g^2
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        w  -= mom

    Weight decay is L2 added to the gradient (TF-Slim's ``l2_regularizer``).

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate, > 0.
        decay: Mean-square decay (TF's ``decay``, torch's ``alpha``). Default 0.9.
        momentum: Momentum. Default 0.9.
        eps: Added inside the square root. Default 1.0 (TF-Slim's ``opt_epsilon``).
        weight_decay: L2 coefficient. Default 0.
    """

    def __init__(self, params, lr: float, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 <= decay < 1 or not 0 <= momentum < 1 or not eps > 0 or weight_decay < 0:
            raise ValueError(f"need 0 <= decay < 1, 0 <= momentum < 1, eps > 0, weight_decay >= 0; "
                             f"got decay={decay}, momentum={momentum}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.ones_like(p)
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            ms = [self.state[p]["square_avg"] for p in params]
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(ms, group["decay"])
            torch._foreach_addcmul_(ms, grads, grads, value=1 - group["decay"])
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, bufs)
        return loss


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter per input channel."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, weight_decay: float, depthwise_weight_decay: float = 0.0
                 ) -> list[dict]:
    """Split parameters for weight decay as the paper prescribes.

    Convolution and fully connected weights get ``weight_decay``; depthwise filters get
    ``depthwise_weight_decay`` (the paper: "very little or no weight decay ... on the depthwise
    filters since there are so few parameters in them"; TF-Slim's ``regularize_depthwise=False``);
    BatchNorm parameters and biases get none.

    Returns:
        Up to three groups with a ``name`` key: ``decay``, ``depthwise``, ``no_decay``.
    """
    groups = {"decay": [], "depthwise": [], "no_decay": []}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if is_depthwise(module) and name == "weight":
                groups["depthwise"].append(p)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight":
                groups["decay"].append(p)
            else:
                groups["no_decay"].append(p)
    decays = {"decay": weight_decay, "depthwise": depthwise_weight_decay, "no_decay": 0.0}
    return [{"name": k, "params": v, "weight_decay": decays[k]} for k, v in groups.items() if v]


class EMA:
    """Exponential moving average of a model's weights (buffers copied), for evaluation.

    Args:
        model: The model being trained.
        decay: Per-step decay in [0, 1). TF-Slim's ``moving_average_decay`` is 0.9999.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "state": self.state}

    def load_state_dict(self, d: dict) -> None:
        self.decay = d["decay"]
        for k, v in d["state"].items():
            self.state[k].copy_(v)


def make_optimizer(model: nn.Module, cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``optim.param_groups`` (no weight decay on BatchNorm, biases and,
    by default, depthwise filters)."""
    groups = param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=lr, decay=cfg.rmsprop_decay, momentum=cfg.momentum, eps=cfg.eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, cfg: RunConfig) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of a run of ``total_steps``.

    A linear warm-up over ``warmup_epochs`` (at most half the run, so a short run still decays),
    then, over the remaining steps, from 1 down to ``f = cfg.lr_final``:

    - ``exponential``: ``f ** t`` for the fraction ``t`` of the decay done, i.e. the paper's
      constant-rate decay with its rate fitted to the run; with ``lr_final=None``, ``lr_decay``
      per ``lr_decay_steps`` (default: per epoch) whatever the run's length, applied smoothly;
    - ``cosine``: half a cosine from 1 to ``f`` (None: 0);
    - ``linear``: a straight line from 1 to ``f`` (None: 0);
    - ``poly``: ``f + (1 - f) * (1 - t) ** lr_power`` (DeepLab's schedule; None: ``f = 0``).

    The last step's multiplier is ``f`` plus one step's worth of decay, whatever the number of
    epochs.
    """
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total_steps / 2)
    if step < warmup:
        return (step + 1) / warmup
    t = step - warmup
    final = cfg.lr_final
    if cfg.lr_schedule == "exponential" and final is None:
        return cfg.lr_decay ** (t / (cfg.lr_decay_steps or steps_per_epoch))
    progress = min(t / max(total_steps - warmup, 1), 1.0)  # reaches 1 just after the last step
    if cfg.lr_schedule == "exponential":
        return final ** progress
    final = final or 0.0
    if cfg.lr_schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.lr_schedule == "linear":
        shape = 1 - progress
    else:
        shape = (1 - progress) ** cfg.lr_power
    return final + (1 - final) * shape
