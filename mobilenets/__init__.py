"""mobilenets: the MobileNets paper as a library: models, cost, training and deployment."""
from .checkpoint import load_model, save_model
from .layers import ConvBNAct, DepthwiseSeparable
from .mobilenet_v1 import V1_BLOCKS, V1_SHALLOW_BLOCKS, MobileNetV1, scale_channels
from .registry import MODELS, create_model, get_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "ConvBNAct", "DepthwiseSeparable", "MobileNetV1", "V1_BLOCKS", "V1_SHALLOW_BLOCKS", "MODELS",
    "create_model", "get_spec", "list_models", "load_model", "save_model", "scale_channels",
]
