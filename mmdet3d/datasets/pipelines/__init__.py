"""Data pipeline transforms, registered in ``mmdet3d.registry.TRANSFORMS`` under BEVFusion's names."""
from .compose import Compose
from .formatting import Collect3D, DefaultFormatBundle3D
from .loading import (LoadAnnotations3D, LoadMultiViewImageFromFiles, LoadPointsFromFile, LoadPointsFromMultiSweeps,
                      load_points_file)
from .transforms_2d import GridMask, ImageAug3D, ImageNormalize
from .transforms_3d import (GlobalRotScaleTrans, ObjectNameFilter, ObjectRangeFilter, PointShuffle, PointsRangeFilter,
                            RandomFlip3D)

__all__ = [
    "Compose", "Collect3D", "DefaultFormatBundle3D", "LoadAnnotations3D", "LoadMultiViewImageFromFiles",
    "LoadPointsFromFile", "LoadPointsFromMultiSweeps", "load_points_file", "GridMask", "ImageAug3D", "ImageNormalize",
    "GlobalRotScaleTrans", "ObjectNameFilter", "ObjectRangeFilter", "PointShuffle", "PointsRangeFilter",
    "RandomFlip3D",
]
