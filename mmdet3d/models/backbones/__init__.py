from .generalized_resnet import GeneralizedResNet
from .resnet import ResNet
from .sparse_encoder import SparseEncoder
from .swin import SwinTransformer

__all__ = ["GeneralizedResNet", "ResNet", "SparseEncoder", "SwinTransformer"]
