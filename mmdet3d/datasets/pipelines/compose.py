"""Compose a pipeline from config dicts using this package's TRANSFORMS registry.

mmengine's own ``Compose`` builds from mmengine's root registry and only finds our transforms under a default scope;
this one needs no scope.
"""
from mmdet3d.registry import TRANSFORMS

# Transforms of the original configs that need resources this project does not ship.
UNSUPPORTED = {
    "ObjectPaste": "it needs a GT database (nuscenes_dbinfos_train.pkl), which this project does not build",
    "LoadBEVSegmentation": "it needs the nuScenes map expansion; BEV map segmentation is not part of this project",
}


@TRANSFORMS.register_module()
class Compose:
    """Applies transforms in order; a transform returning ``None`` ends the pipeline with ``None``."""

    def __init__(self, transforms):
        if isinstance(transforms, dict) or not hasattr(transforms, "__iter__"):
            raise TypeError(f"Compose expects a list of transform configs, got {type(transforms).__name__}")
        self.transforms = [self._build(i, t) for i, t in enumerate(transforms)]

    @staticmethod
    def _build(index, transform):
        if callable(transform):
            return transform
        if not isinstance(transform, dict) or "type" not in transform:
            raise TypeError(f"pipeline[{index}] must be a callable or a dict with 'type', got {transform!r}")
        name = transform["type"]
        if name in UNSUPPORTED:
            raise ValueError(f"pipeline[{index}]: {name} is not supported: {UNSUPPORTED[name]}; remove it")
        if TRANSFORMS.get(name) is None:
            raise KeyError(f"pipeline[{index}]: unknown transform type '{name}'")
        return TRANSFORMS.build(dict(transform))

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}({inner}\n)"
