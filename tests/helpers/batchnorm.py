"""Freshly initialised detectors give BEV features of ~0, every heatmap logit equal to the bias to 1e-5 and so a top-K
order of boxes decided by rounding; BatchNorm statistics of one batch, as after training, give features of unit
scale. The variance floor keeps near-constant channels from amplifying rounding errors."""
import torch

from .fake_batch import make_batch


def calibrate_batchnorm(model, variance_floor=1e-2):
    """Sets every BatchNorm's running statistics from one fake batch; returns ``model`` in eval mode."""
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in batchnorms:
        module.momentum = 1.0
    with torch.no_grad():
        model.train().head_outputs(make_batch(2, seed=2, with_points=False))
        for module in batchnorms:
            module.running_var.clamp_(min=variance_floor)
    return model.eval()
