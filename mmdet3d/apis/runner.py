"""Builds an mmengine ``Runner`` from a BEVFusion-style config (the keys of ``configs/default.yaml``).

| config key | runner |
|---|---|
| ``model``, ``find_unused_parameters`` | model, DDP wrapper |
| ``data.samples_per_gpu``, ``data.workers_per_gpu``, ``data.{train,val,test}`` | data loaders (val/test: 1 sample per process unless ``data.val.samples_per_gpu``) |
| ``evaluator``, ``evaluation.interval`` | validation every N epochs (0 or null: never) |
| ``optimizer``, ``optimizer_config``, ``fp16``, ``lr_config``, ``momentum_config`` | see ``optim.py`` |
| ``max_epochs``, ``seed``, ``deterministic``, ``cudnn_benchmark`` | train loop, randomness, environment |
| ``checkpoint_config.{interval,max_keep_ckpts}``, ``log_config.interval`` | checkpoint / logger hooks |
| ``load_from``, ``resume_from`` | weights to start from / checkpoint to resume |
| ``custom_hooks``, ``custom_imports`` | passed on / imported |

The run directory receives ``configs.yaml`` (the resolved config), ``epoch_N.pth`` + ``latest.pth``,
``metrics_epoch_N.json`` and, per launch, ``<timestamp>/<timestamp>.log`` and ``<timestamp>/vis_data`` (scalars
JSON and TensorBoard events).
"""
import copy
import itertools
import logging
import os

import yaml
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

from mmdet3d.datasets.collate import collate
from mmdet3d.datasets.pipelines.modality import without_points
from mmdet3d.registry import MODELS

from . import evaluator, hooks, wrappers  # noqa: F401  (registrations)
from mmdet3d.utils.checkpoint import LATEST, extract_state_dict, load_state_dict_checked, read_checkpoint
from .distributed import get_world_size
from .optim import amp_settings, build_optim_wrapper_cfg, build_param_scheduler_cfgs, check_keys

CONFIG_DUMP = "configs.yaml"
CHECKPOINT_KEYS = {"interval", "max_keep_ckpts", "save_optimizer", "save_last"}
LOG_KEYS = {"interval", "hooks"}  # mmcv's logger `hooks` are implied: text log and TensorBoard are always written
_runner_count = itertools.count()


# mmengine warnings that every run of ours would print and that ask nothing of the user.
MMENGINE_NOISE = ("has no metainfo", '"FileClient" will be deprecated', '"HardDiskBackend" is the alias')


def _not_mmengine_noise(record):
    message = record.getMessage()
    return not any(noise in message for noise in MMENGINE_NOISE)


class SimDistillRunner(Runner):
    """mmengine ``Runner`` with the project's checkpoint policy.

    - every checkpoint is read with ``torch.load(weights_only=True)`` and loaded with one-line errors
      (``mmdet3d.utils.checkpoint``);
    - ``resume_from`` restores model, optimizer, AMP scaler, schedulers, epoch and iteration, with strict key
      matching; ``load_from`` loads model weights only, strictly when ``strict_load`` (testing) or partially
      (starting a training from another model's checkpoint);
    - the resolved config is written to ``<run dir>/configs.yaml``.
    """

    def __init__(self, *args, resume_from=None, strict_load=True, model_wrapper_cfg=None, **kwargs):
        self._resume_from = resume_from
        self._strict_load = strict_load
        self._model_wrapper_cfg = model_wrapper_cfg
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # mmengine would set MKL to one thread per process with a warning on every launch; follow the OMP
            # setting the launcher (torchrun: 1) or the user chose instead
            os.environ.setdefault("MKL_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        super().__init__(*args, resume=resume_from is not None, **kwargs)

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        # The console shows warnings, progress bars and the run summary; the environment, the whole config, the hook
        # list and the interval lines go to the text log in the run directory.
        logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(max(handler.level, logging.WARNING))
                handler.addFilter(_not_mmengine_noise)
        return logger

    def wrap_model(self, model_wrapper_cfg, model):
        # mmengine reads the wrapper from ``cfg``; ours comes from the runner's arguments.
        return super().wrap_model(model_wrapper_cfg or copy.deepcopy(self._model_wrapper_cfg), model)

    def load_or_resume(self):
        if self._has_loaded:
            return
        if self._resume_from is not None:
            self.resume(self._resume_from)
        elif self._load_from is not None:
            self.load_checkpoint(self._load_from, strict=self._strict_load)

    def load_checkpoint(self, filename, map_location="cpu", strict=True, revise_keys=None):
        checkpoint = read_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        load_state_dict_checked(self.model, extract_state_dict(checkpoint, filename), filename, strict=strict)
        self._has_loaded = True
        self.logger.info(f"loaded weights from {filename}")
        return checkpoint

    @master_only
    def dump_config(self):
        write_resolved_config(self.cfg, os.path.join(self.work_dir, CONFIG_DUMP))


def write_resolved_config(cfg, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False, default_flow_style=None, width=120)


def _plain(obj):
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def import_custom_modules(cfg):
    """mmengine's ``custom_imports: {imports: [module, ...], allow_failed_imports: false}``."""
    custom = cfg.get("custom_imports")
    if custom:
        import_modules_from_strings(**_plain(custom))


def _model_class(model_cfg):
    return MODELS.get(model_cfg.get("type")) if model_cfg.get("type") else None


def model_reads_points(model_cfg, training):
    """``reads_points`` of the model class (True for a model type that does not say)."""
    reads = getattr(_model_class(model_cfg), "reads_points", None)
    return True if reads is None else bool(reads(model_cfg, training))


def _dataloader(dataset_cfg, batch_size, workers, shuffle, points=True):
    dataset = copy.deepcopy(dataset_cfg) if points else without_points(dataset_cfg)
    batch_size = dataset.pop("samples_per_gpu", batch_size)
    workers = dataset.pop("workers_per_gpu", workers)
    return {
        "dataset": dataset,
        "batch_size": batch_size,
        "num_workers": workers,
        # Non-persistent workers are re-created, with the same seeds, every epoch.
        "persistent_workers": workers > 0,
        "pin_memory": get_device() == "cuda",
        "sampler": {"type": "DefaultSampler", "shuffle": shuffle},
        "collate_fn": collate,
    }


def _evaluator(cfg):
    metrics = cfg.get("evaluator")
    if not metrics:
        raise ValueError("config has no 'evaluator' (e.g. {type: NuScenesMetric, ...})")
    return {"type": "RankZeroEvaluator", "metrics": copy.deepcopy(metrics)}


def inference_fp16(cfg):
    """Evaluation runs under fp16 autocast when training does, as the original's ``wrap_fp16_model`` (GPU only)."""
    amp = amp_settings(cfg.get("fp16"))
    return bool(amp) and amp["dtype"] == "float16" and get_device() == "cuda"


def find_resume_checkpoint(cfg, run_dir, resume):
    """``resume_from`` if set; else ``<run dir>/latest.pth`` when ``resume`` and it exists; else ``None``."""
    if cfg.get("resume_from"):
        path = cfg["resume_from"]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"resume_from: checkpoint not found: {path}")
        return path
    latest = os.path.join(run_dir, LATEST)
    if resume and os.path.isfile(latest):
        return latest
    if resume:
        print_log(f"--resume: no {latest} yet, starting from scratch", logger="current")
    return None


def _common_runner_args(cfg, run_dir):
    stem = os.path.splitext(os.path.basename(cfg.filename or "run"))[0]
    count = next(_runner_count)
    log_config = dict(cfg.get("log_config") or {})
    check_keys("log_config", log_config, LOG_KEYS)
    log_interval = int(log_config.get("interval", 50))
    distributed = get_world_size() > 1
    return {
        "model": copy.deepcopy(_plain(cfg["model"])),
        "work_dir": run_dir,
        # Unique within the process: mmengine keys its message hub, logger and visualizer by this name.
        "experiment_name": stem if count == 0 else f"{stem}-{count}",
        "default_scope": "mmdet3d",
        "randomness": {"seed": cfg.get("seed", 0), "deterministic": bool(cfg.get("deterministic", False))},
        "env_cfg": {"cudnn_benchmark": bool(cfg.get("cudnn_benchmark", False)),
                    "mp_cfg": {"mp_start_method": "fork", "opencv_num_threads": 0}},
        "launcher": "pytorch" if distributed else "none",
        "model_wrapper_cfg": {"type": "SimDistillDistributedDataParallel",
                              "find_unused_parameters": bool(cfg.get("find_unused_parameters", False))},
        "visualizer": {"type": "Visualizer", "vis_backends": [{"type": "LocalVisBackend"},
                                                              {"type": "TensorboardVisBackend"}]},
        # mmcv averaged the logged losses over the logging interval.
        "log_processor": {"window_size": log_interval, "by_epoch": True},
        "cfg": cfg,
    }, log_interval


def check_teacher(cfg, resume_checkpoint):
    """A model whose class ``trains_from_teacher`` (SimDistill) trains only from a trained teacher:
    ``model.teacher_checkpoint``, or the run's own checkpoint when resuming (it holds the teacher), unless
    ``allow_random_teacher`` is set."""
    model = cfg.get("model") or {}
    needs_teacher = getattr(_model_class(model), "trains_from_teacher", False)
    if needs_teacher and not model.get("teacher_checkpoint") and resume_checkpoint is None \
            and not cfg.get("allow_random_teacher"):
        raise ValueError("model.teacher_checkpoint is not set: this SimDistill student would distil from (and start "
                         "from) a random, frozen teacher; pass --model.teacher_checkpoint runs/<teacher>/latest.pth")


def _number_at(cfg, path):
    node = cfg
    for key in path.split("."):
        node = node.get(key) if isinstance(node, (dict, Config)) else None
    return node


# (key, smallest allowed value, integer only): checked before the runner writes anything.
TRAIN_NUMBERS = (("max_epochs", 1, True), ("data.samples_per_gpu", 1, True), ("data.workers_per_gpu", 0, True),
                 ("evaluation.interval", 0, True), ("checkpoint_config.interval", 1, True),
                 ("log_config.interval", 1, True), ("seed", 0, True), ("optimizer.lr", 0.0, False))


def check_train_numbers(cfg):
    """One-line errors for schedule and loader numbers that cannot work (``--max_epochs -1``, a batch of 0)."""
    for key, lowest, integer in TRAIN_NUMBERS:
        value = _number_at(cfg, key)
        if value is None:
            continue
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or value < lowest:
            want = f"an integer >= {lowest}" if integer else f"a number >= {lowest}"
            raise ValueError(f"{key} must be {want}, got {value!r}")


def _start_line(cfg, resume_checkpoint):
    if resume_checkpoint:
        return f"resuming {resume_checkpoint}"
    teacher = (cfg.get("model") or {}).get("teacher_checkpoint")
    parts = [f"weights from {cfg['load_from']}"] if cfg.get("load_from") else ["from scratch"]
    return ", ".join(parts + ([f"teacher {teacher}"] if teacher else []))


class RunFinished(Exception):
    """``--resume`` of a run whose checkpoint already holds every epoch of the schedule."""


def finished_epochs(checkpoint):
    """Epochs a run's checkpoint has completed (its ``meta.epoch``), or None."""
    meta = read_checkpoint(checkpoint).get("meta") or {}
    epoch = meta.get("epoch")
    return int(epoch) if epoch is not None else None


def build_train_runner(cfg, run_dir, resume=False):
    """Runner for ``tools/train.py``: training with validation every ``evaluation.interval`` epochs."""
    cfg = cfg if isinstance(cfg, Config) else Config(cfg)
    check_train_numbers(cfg)
    resume_checkpoint = find_resume_checkpoint(cfg, run_dir, resume)
    if resume_checkpoint:
        done, planned = finished_epochs(resume_checkpoint), int(cfg.get("max_epochs", 1))
        if done is not None and done >= planned:
            raise RunFinished(f"{resume_checkpoint} has finished its schedule ({done} of {planned} epochs); nothing "
                              f"to resume (raise --max_epochs to train on)")
    check_teacher(cfg, resume_checkpoint)
    import_custom_modules(cfg)
    args, log_interval = _common_runner_args(cfg, run_dir)
    data = cfg.get("data") or {}
    if not data.get("train"):
        raise ValueError("config has no 'data.train' dataset")
    samples_per_gpu, workers = data.get("samples_per_gpu", 1), data.get("workers_per_gpu", 0)
    ckpt_config = dict(cfg.get("checkpoint_config") or {})
    check_keys("checkpoint_config", ckpt_config, CHECKPOINT_KEYS)
    eval_interval = (cfg.get("evaluation") or {}).get("interval") or 0
    train_cfg = {"by_epoch": True, "max_epochs": int(cfg.get("max_epochs", 1))}
    if eval_interval:
        if not data.get("val"):
            raise ValueError(f"evaluation.interval is {eval_interval} but the config has no 'data.val' "
                             "(set --evaluation.interval 0 to train without validation)")
        train_cfg.update(val_interval=int(eval_interval), val_begin=1)
        args.update(val_dataloader=_dataloader(_plain(data["val"]), 1, workers, shuffle=False,
                                               points=model_reads_points(cfg["model"], training=False)),
                    val_evaluator=_evaluator(cfg), val_cfg={"type": "ValLoop", "fp16": inference_fp16(cfg)})
    return SimDistillRunner(
        **args,
        train_dataloader=_dataloader(_plain(data["train"]), samples_per_gpu, workers, shuffle=True,
                                     points=model_reads_points(cfg["model"], training=True)),
        train_cfg=train_cfg,
        optim_wrapper=build_optim_wrapper_cfg(_plain(cfg), device_type=get_device()),
        param_scheduler=build_param_scheduler_cfgs(_plain(cfg)) or None,
        default_hooks={
            "logger": {"type": "LoggerHook", "interval": log_interval},
            "checkpoint": {"type": "AtomicCheckpointHook", "by_epoch": True,
                           "interval": int(ckpt_config.get("interval", 1)),
                           "max_keep_ckpts": int(ckpt_config.get("max_keep_ckpts", -1) or -1),
                           **{k: ckpt_config[k] for k in ("save_optimizer", "save_last") if k in ckpt_config}},
        },
        custom_hooks=[{"type": "RunSummaryHook", "start": _start_line(cfg, resume_checkpoint)},
                      {"type": "WeightsOnlyCheckpointHook"}, {"type": "ProgressBarHook"},
                      {"type": "MetricsDumpHook"}] + list(_plain(cfg.get("custom_hooks") or [])),
        load_from=cfg.get("load_from"),
        resume_from=resume_checkpoint,
        strict_load=False,
    )


def build_test_runner(cfg, checkpoint, run_dir, model=None):
    """Runner for ``tools/test.py``: ``data.test`` through the model loaded strictly from ``checkpoint``, or through
    ``model`` (a ready module, e.g. an ``OnnxDetector``; ``checkpoint`` is then not loaded)."""
    cfg = cfg if isinstance(cfg, Config) else Config(cfg)
    import_custom_modules(cfg)
    args, _ = _common_runner_args(cfg, run_dir)
    if model is not None:
        args["model"] = model
    data = cfg.get("data") or {}
    if not data.get("test"):
        raise ValueError("config has no 'data.test' dataset")
    return SimDistillRunner(
        **args,
        test_dataloader=_dataloader(_plain(data["test"]), 1, data.get("workers_per_gpu", 0), shuffle=False,
                                    points=model_reads_points(cfg["model"], training=False)),
        test_evaluator=_evaluator(cfg),
        test_cfg={"type": "TestLoop", "fp16": inference_fp16(cfg)},
        custom_hooks=[{"type": "ProgressBarHook"}],
        load_from=checkpoint if model is None else None,
        strict_load=True,
    )
