"""The peers our models are timed against (``deploy.bench``): timm's MobileNet V1 and
torchvision's MobileNetV2, built fresh (no weights are downloaded) with our model's width and class
count, so that the same graph can be compared runtime by runtime."""
from __future__ import annotations

from torch import nn

#: The peer backends and the one architecture each exists for.
PEERS = {"timm": "mobilenet_v1", "timm-onnx": "mobilenet_v1", "torchvision": "mobilenet_v2"}
#: The eager peer each architecture's latencies are compared with (``BenchRow.vs_peer``).
EAGER_PEER = {"mobilenet_v1": "timm", "mobilenet_v2": "torchvision"}


def timm_mobilenet_v1(width_mult: float, num_classes: int = 1000) -> nn.Module:
    """timm's MobileNet V1 with any width multiplier (timm registers only 1.0 and 1.25 by name,
    so other alphas use the generator behind them)."""
    import timm

    named = {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}
    try:
        from timm.models.efficientnet import _gen_mobilenet_v1
    except ImportError:  # a timm without the generator: the named variants only
        if width_mult not in named:
            raise ValueError(f"this timm has no MobileNet V1 with width_mult {width_mult}") from None
        return timm.create_model(named[width_mult], pretrained=False, num_classes=num_classes)
    return _gen_mobilenet_v1(named.get(width_mult, "mobilenetv1_100"), channel_multiplier=width_mult,
                             pretrained=False, num_classes=num_classes)


def torchvision_mobilenet_v2(width_mult: float, num_classes: int = 1000) -> nn.Module:
    """torchvision's MobileNetV2 with any width multiplier, fresh weights (its channels are ours)."""
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, width_mult=width_mult, num_classes=num_classes)


def check_peer(backend: str, arch: str) -> None:
    """``ValueError`` if ``backend`` is a peer that does not exist for ``arch``, naming the one that
    does (timm has MobileNet V1, torchvision MobileNetV2)."""
    if backend in PEERS and PEERS[backend] != arch:
        raise ValueError(f"the {backend!r} peer exists for {PEERS[backend]} only, not {arch}; "
                         f"compare {arch} with {EAGER_PEER[arch]!r}")


def peer_model(backend: str, model: nn.Module) -> nn.Module:
    """The peer ``backend``'s model with ``model``'s width and class count, in eval mode."""
    cfg = model.config
    check_peer(backend, cfg.arch)
    build = torchvision_mobilenet_v2 if backend == "torchvision" else timm_mobilenet_v1
    peer = build(cfg.width_mult, cfg.num_classes)
    peer.config = cfg.replace()  # the same architecture: its input size, channels, ...
    return peer.eval()
