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
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="mmdet3d", locations=["mmdet3d.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="mmdet3d", locations=["mmdet3d.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope="mmdet3d", locations=["mmdet3d.datasets"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope="mmdet3d", locations=["mmdet3d.evaluation"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope="mmdet3d", locations=["mmdet3d.apis"])
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, scope="mmdet3d", locations=["mmdet3d.datasets"])

# Scope-mates of mmengine's own registries: without them mmengine warns that the scope ``mmdet3d`` has no such
# registry each time a runner is built. Our schedulers, hooks, wrappers and evaluator live in ``mmdet3d.apis``.
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=MMENGINE_PARAM_SCHEDULERS, scope="mmdet3d",
                            locations=["mmdet3d.apis"])
OPTIMIZERS = Registry("optimizer", parent=MMENGINE_OPTIMIZERS, scope="mmdet3d", locations=["mmdet3d.apis"])
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS, scope="mmdet3d", locations=["mmdet3d.apis"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope="mmdet3d", locations=["mmdet3d.apis"])
EVALUATOR = Registry("evaluator", parent=MMENGINE_EVALUATOR, scope="mmdet3d", locations=["mmdet3d.apis"])
MODEL_WRAPPERS = Registry("model_wrapper", parent=MMENGINE_MODEL_WRAPPERS, scope="mmdet3d", locations=["mmdet3d.apis"])
LOOPS = Registry("loop", parent=MMENGINE_LOOPS, scope="mmdet3d", locations=["mmdet3d.apis"])
LOG_PROCESSORS = Registry("log_processor", parent=MMENGINE_LOG_PROCESSORS, scope="mmdet3d", locations=["mmdet3d.apis"])
VISUALIZERS = Registry("visualizer", parent=MMENGINE_VISUALIZERS, scope="mmdet3d", locations=["mmdet3d.apis"])
VISBACKENDS = Registry("vis_backend", parent=MMENGINE_VISBACKENDS, scope="mmdet3d", locations=["mmdet3d.apis"])
