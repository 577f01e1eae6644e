"""Distributed model wrapper: mmengine's DDP wrapper made to work on CPU, logging losses averaged over ranks."""
import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from .distributed import get_world_size


def average_log_vars(log_vars):
    """Averages the logged values over ranks so that rank 0 logs the loss of the global batch (as mmcv did); every
    rank must log the same names."""
    world_size = get_world_size()
    if world_size == 1 or not log_vars:
        return log_vars
    names = list(log_vars)
    first = next(iter(log_vars.values()))
    device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    count = torch.tensor([len(names), -len(names)], device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    if count[0] != -count[1]:
        raise RuntimeError(f"ranks log different numbers of loss values (this rank: {names})")
    values = torch.stack([torch.as_tensor(v, device=device).detach().double().reshape(()) for v in log_vars.values()])
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    values /= world_size
    return dict(zip(names, values))


@MODEL_WRAPPERS.register_module()
class SimDistillDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a CPU module (gloo), and averages the logged losses
    over ranks."""

    def __init__(self, module, device_ids=None, **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices <= {"cpu"}:
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)

    def train_step(self, data, optim_wrapper):
        return average_log_vars(super().train_step(data, optim_wrapper))
