"""Training and testing entry points used by ``tools/train.py`` and ``tools/test.py``."""
from mmdet3d.utils.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, read_checkpoint
from .distributed import DistInfo, init_distributed, shutdown_distributed
from .hooks import AtomicCheckpointHook, MetricsDumpHook, ProgressBarHook, WeightsOnlyCheckpointHook
from .optim import build_optim_wrapper_cfg, build_param_scheduler_cfgs
from .runner import SimDistillRunner, build_test_runner, build_train_runner

__all__ = [
    "AtomicCheckpointHook", "CheckpointError", "DistInfo", "MetricsDumpHook", "ProgressBarHook", "SimDistillRunner",
    "WeightsOnlyCheckpointHook", "atomic_write_bytes", "build_optim_wrapper_cfg", "build_param_scheduler_cfgs",
    "build_test_runner", "build_train_runner", "init_distributed", "load_checkpoint", "read_checkpoint",
    "shutdown_distributed",
]
