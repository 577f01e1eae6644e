from . import pipelines  # noqa: F401  (registers the transforms)
from .cbgs import CBGSDataset
from .collate import collate
from .nuscenes_dataset import NuScenesDataset

__all__ = ["CBGSDataset", "NuScenesDataset", "collate"]
