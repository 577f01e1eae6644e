"""A generated dataset in nuScenes' own on-disk format (tables, camera JPEGs, LiDAR .pcd.bin with sweeps), so the
converter, dataset, training and the devkit's evaluation run on it exactly as on real nuScenes."""
from .catalogue import DETECTION_CLASSES, OBJECT_CLASSES
from .generate import generate

__all__ = ["DETECTION_CLASSES", "OBJECT_CLASSES", "generate"]
