"""Model modules; importing this package registers all of them."""
from . import backbones, bevformer, fusers, fusion_models, heads, losses, necks, vtransforms  # noqa: F401
