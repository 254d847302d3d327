"""mobilenets: the MobileNets papers (V1 and MobileNetV2) as a library: models (and ShuffleNet V1,
which the MobileNetV2 slides compare with), cost, activation memory, training and deployment."""
from mobilenets.models.layers import (ChannelShuffle, ConvBNAct, DepthwiseSeparable,
                                      InvertedResidual, ShuffleUnit)
from mobilenets.models.config import ModelConfig
from mobilenets.models.mobilenet_v1 import (V1_BLOCKS, V1_SHALLOW_BLOCKS, MobileNetV1,
                                            MobileNetV1Config, scale_channels)
from mobilenets.models.mobilenet_v2 import V2_BLOCKS, MobileNetV2, MobileNetV2Config
from mobilenets.models.modelfile import save_model
from mobilenets.models.registry import MODELS, create_model, get_spec, list_models, load_model
from mobilenets.models.shufflenet import ShuffleNetV1, ShuffleNetV1Config

__version__ = "0.1.0"

__all__ = [
    "ConvBNAct", "DepthwiseSeparable", "InvertedResidual", "MobileNetV1", "MobileNetV2",
    "V1_BLOCKS", "V1_SHALLOW_BLOCKS", "V2_BLOCKS", "MODELS", "create_model", "get_spec",
    "list_models", "load_model", "save_model", "scale_channels", "ChannelShuffle", "ShuffleUnit",
    "ShuffleNetV1", "ModelConfig", "MobileNetV1Config", "MobileNetV2Config", "ShuffleNetV1Config",
]
