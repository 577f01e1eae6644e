"""Translation of BEVFusion/mmcv optimisation keys into mmengine's ``optim_wrapper`` and ``param_scheduler``.

| config key | mmengine |
|---|---|
| ``optimizer`` (+ ``paramwise_cfg.custom_keys`` with ``lr_mult``/``decay_mult``) | ``optim_wrapper.optimizer`` / ``.paramwise_cfg`` (same substring-match semantics) |
| ``optimizer_config.grad_clip`` / ``.cumulative_iters`` | ``clip_grad`` / ``accumulative_counts`` |
| ``fp16`` (``loss_scale``: ``dynamic``, a number or GradScaler kwargs; ``dtype: bfloat16`` for bf16) | ``AmpOptimWrapper`` |
| ``lr_config`` ``cyclic`` / ``CosineAnnealing`` | ``MMCVCyclicLR`` / ``MMCVCosineAnnealingLR`` |
| ``momentum_config`` ``cyclic`` | ``MMCVCyclicMomentum`` |
"""
import copy
import warnings

from . import schedulers  # noqa: F401  (registers the schedulers)

CYCLIC_KEYS = {"policy", "by_epoch", "target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy", "gamma"}
COSINE_KEYS = {"policy", "by_epoch", "min_lr", "min_lr_ratio", "warmup", "warmup_iters", "warmup_ratio",
               "warmup_by_epoch"}
OPTIMIZER_CONFIG_KEYS = {"grad_clip", "cumulative_iters"}
FP16_KEYS = {"loss_scale", "dtype"}


def check_keys(section, given, allowed):
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{section}: unsupported key(s) {unknown}; supported: {sorted(allowed)}")


def amp_settings(fp16):
    """``fp16`` config -> ``dict(dtype, loss_scale)`` for ``AmpOptimWrapper``, or ``None`` for fp32."""
    if not fp16:
        return None
    if not isinstance(fp16, dict):
        raise ValueError(f"fp16: expected a mapping (e.g. {{loss_scale: dynamic}}) or null, got {fp16!r}")
    check_keys("fp16", fp16, FP16_KEYS)
    dtype = str(fp16.get("dtype", "float16"))
    if dtype in ("bfloat16", "bf16"):
        # bf16 has fp32's exponent range: no loss scaling (a static scale of 1 still skips non-finite steps).
        return {"dtype": "bfloat16", "loss_scale": 1.0}
    if dtype not in ("float16", "fp16"):
        raise ValueError(f"fp16.dtype: expected float16 or bfloat16, got {dtype!r}")
    loss_scale = fp16.get("loss_scale", "dynamic")
    if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
        loss_scale = float(loss_scale)
    elif not (loss_scale == "dynamic" or isinstance(loss_scale, dict)):
        raise ValueError(f"fp16.loss_scale: expected 'dynamic', a number or GradScaler arguments, got {loss_scale!r}")
    return {"dtype": "float16", "loss_scale": copy.deepcopy(loss_scale)}


def build_optim_wrapper_cfg(cfg, device_type="cpu"):
    """``optim_wrapper`` dict for mmengine's runner from ``optimizer``, ``optimizer_config`` and ``fp16``.

    AMP needs a GPU in mmengine: on CPU an ``fp16`` section is reported and training runs in fp32.
    """
    if not cfg.get("optimizer"):
        raise ValueError("config has no 'optimizer' section")
    optimizer = copy.deepcopy(dict(cfg["optimizer"]))
    paramwise_cfg = optimizer.pop("paramwise_cfg", None)
    optimizer_config = dict(cfg.get("optimizer_config") or {})
    check_keys("optimizer_config", optimizer_config, OPTIMIZER_CONFIG_KEYS)
    wrapper = {"type": "OptimWrapper", "optimizer": optimizer}
    if paramwise_cfg:
        wrapper["paramwise_cfg"] = copy.deepcopy(dict(paramwise_cfg))
    if optimizer_config.get("grad_clip"):
        wrapper["clip_grad"] = dict(optimizer_config["grad_clip"])
    cumulative_iters = optimizer_config.get("cumulative_iters")
    cumulative_iters = 1 if cumulative_iters is None else cumulative_iters
    if int(cumulative_iters) != cumulative_iters or cumulative_iters < 1:
        raise ValueError(f"optimizer_config.cumulative_iters must be a positive integer, got {cumulative_iters}")
    if cumulative_iters > 1:
        wrapper["accumulative_counts"] = int(cumulative_iters)
    amp = amp_settings(cfg.get("fp16"))
    if amp and device_type != "cuda":
        warnings.warn(f"fp16 ({amp['dtype']}) needs a GPU (mmengine's AmpOptimWrapper): training in fp32 on "
                      f"{device_type}")
    elif amp:
        wrapper.update(type="AmpOptimWrapper", **amp)
    return wrapper


def _policy(section, config):
    if "policy" not in config:
        raise ValueError(f"{section}: missing 'policy'")
    return str(config["policy"]).lower()


def lr_scheduler_cfg(lr_config):
    """``lr_config`` -> an mmengine scheduler dict, or ``None`` for a constant learning rate."""
    if not lr_config:
        return None
    policy = _policy("lr_config", lr_config)
    if policy == "cyclic":
        check_keys("lr_config (cyclic)", lr_config, CYCLIC_KEYS)
        if lr_config.get("by_epoch", False):
            raise ValueError("lr_config: the cyclic policy runs by iteration (by_epoch: false), as in mmcv")
        scheduler = {"type": "MMCVCyclicLR", "target_ratio": lr_config.get("target_ratio", (10, 1e-4))}
        for key in ("cyclic_times", "step_ratio_up", "anneal_strategy", "gamma"):
            if key in lr_config:
                scheduler[key] = lr_config[key]
    elif policy == "cosineannealing":
        check_keys("lr_config (CosineAnnealing)", lr_config, COSINE_KEYS)
        scheduler = {"type": "MMCVCosineAnnealingLR", "anneal_by_epoch": lr_config.get("by_epoch", True)}
        for key in COSINE_KEYS - {"policy", "by_epoch"}:
            if key in lr_config:
                scheduler[key] = lr_config[key]
    else:
        raise ValueError(f"lr_config.policy: {lr_config['policy']!r} is not supported (cyclic, CosineAnnealing)")
    # Epoch-based in the config so that the runner converts it with the real epoch length; steps every iteration.
    return {**scheduler, "by_epoch": True, "convert_to_iter_based": True}


def momentum_scheduler_cfg(momentum_config):
    """``momentum_config`` -> an mmengine scheduler dict, or ``None``."""
    if not momentum_config:
        return None
    policy = _policy("momentum_config", momentum_config)
    if policy != "cyclic":
        raise ValueError(f"momentum_config.policy: {momentum_config['policy']!r} is not supported (cyclic)")
    check_keys("momentum_config (cyclic)", momentum_config, CYCLIC_KEYS - {"gamma"})
    if momentum_config.get("by_epoch", False):
        raise ValueError("momentum_config: the cyclic policy runs by iteration (by_epoch: false), as in mmcv")
    scheduler = {"type": "MMCVCyclicMomentum"}
    for key in ("target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy"):
        if key in momentum_config:
            scheduler[key] = momentum_config[key]
    return {**scheduler, "by_epoch": True, "convert_to_iter_based": True}


def build_param_scheduler_cfgs(cfg):
    """The ``param_scheduler`` list for mmengine's runner from ``lr_config`` and ``momentum_config``."""
    schedulers = [lr_scheduler_cfg(cfg.get("lr_config")), momentum_scheduler_cfg(cfg.get("momentum_config"))]
    return [s for s in schedulers if s is not None]
