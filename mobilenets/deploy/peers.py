"""The peers our models are timed against (the peer backends of ``deploy.backends``): timm's
MobileNet V1 and torchvision's MobileNetV2, built fresh (no weights are downloaded) with our
model's width and class count, so that the same graph can be compared runtime by runtime."""
from __future__ import annotations

from torch import nn

from mobilenets.deploy.onnx_export import model_arch


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


#: The peer library of each architecture: the module it lives in (imported before a memory
#: measurement, so that the library's import is not counted as the model's memory) and the
#: builder of its model, ``(width_mult, num_classes) -> model``.
PEER_MODELS = {"mobilenet_v1": ("timm", timm_mobilenet_v1),
               "mobilenet_v2": ("torchvision.models", torchvision_mobilenet_v2)}


def peer_model(model: nn.Module) -> nn.Module:
    """The peer library's model of ``model``'s architecture with its width and class count, in
    eval mode; its ``config`` is ``model``'s (the same architecture: input size, channels, ...).

    Raises:
        ValueError: if no peer library has that architecture.
    """
    arch = model_arch(model)
    if arch not in PEER_MODELS:
        raise ValueError(f"no peer library has {arch}; peers exist for {', '.join(PEER_MODELS)}")
    cfg = model.config
    peer = PEER_MODELS[arch][1](cfg.width_mult, cfg.num_classes)
    peer.config = cfg.replace()
    return peer.eval()
