"""mmengine registries of this package.

Each is a child of mmengine's root registry under the scope ``mmdet3d``, so an mmengine ``Runner`` built with
``default_scope='mmdet3d'`` finds our models, datasets, transforms and metrics by their ``type`` names.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="mmdet3d", locations=["mmdet3d.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="mmdet3d", locations=["mmdet3d.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope="mmdet3d", locations=["mmdet3d.datasets"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope="mmdet3d", locations=["mmdet3d.evaluation"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope="mmdet3d", locations=["mmdet3d.apis"])
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, scope="mmdet3d", locations=["mmdet3d.datasets"])
