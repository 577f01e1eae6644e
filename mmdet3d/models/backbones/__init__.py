from .generalized_resnet import GeneralizedResNet
from .resnet import ResNet
from .sparse_encoder import SparseEncoder
from .swin import SwinTransformer
from .vitaev2 import ViTAEv2

__all__ = ["GeneralizedResNet", "ResNet", "SparseEncoder", "SwinTransformer", "ViTAEv2"]
