from .conv import ConvFuser

__all__ = ["ConvFuser"]
