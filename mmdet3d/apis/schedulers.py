"""mmcv's ``cyclic`` and ``CosineAnnealing`` (+ warm-up) policies as mmengine parameter schedulers.

mmengine has no cyclic policy, and its chainable schedulers compose warm-up and cosine multiplicatively only
approximately (``eta_min`` is scaled too). These schedulers compute the value of step ``s`` in closed form from the
group's initial value, exactly as mmcv's ``LrUpdaterHook``/``MomentumUpdaterHook`` do from ``runner.iter``; so
resuming needs nothing but ``last_step``. They step every iteration; in a config write them with ``by_epoch=True,
convert_to_iter_based=True`` so that mmengine's runner passes the epoch length (``end`` defaults to ``max_epochs``).
"""
import abc
import logging
import math

from mmengine.logging import print_log
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.momentum_scheduler import MomentumSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


def annealing_cos(start, end, factor):
    """Cosine from ``start`` (factor 0) to ``end`` (factor 1)."""
    return end + 0.5 * (start - end) * (math.cos(math.pi * factor) + 1)


def annealing_linear(start, end, factor):
    return start + (end - start) * factor


ANNEALING = {"cos": annealing_cos, "linear": annealing_linear}


def expand_target_ratio(target_ratio):
    """mmcv's rule: a single ratio ``r`` means ``(r, r / 1e5)`` (peak, final)."""
    if isinstance(target_ratio, (int, float)) and not isinstance(target_ratio, bool):
        return float(target_ratio), float(target_ratio) / 1e5
    if isinstance(target_ratio, (list, tuple)) and len(target_ratio) == 1:
        return float(target_ratio[0]), float(target_ratio[0]) / 1e5
    if isinstance(target_ratio, (list, tuple)) and len(target_ratio) == 2:
        return float(target_ratio[0]), float(target_ratio[1])
    raise ValueError(f"target_ratio must be a number or a list of one or two numbers, got {target_ratio!r}")


class _ClosedFormScheduler(_ParamScheduler, metaclass=abc.ABCMeta):
    """Per-iteration schedule whose value at step ``s`` (counted from ``begin``) is ``value_at(initial, s)``."""

    def __init__(self, optimizer, param_name, begin=0, end=INF, last_step=-1, by_epoch=False, verbose=False,
                 epoch_length=None):
        if by_epoch:
            raise ValueError(f"{type(self).__name__} steps every iteration: configure it with by_epoch=True and "
                             "convert_to_iter_based=True (the runner converts epochs), or by_epoch=False")
        if end == INF:
            raise ValueError(f"{type(self).__name__} needs a finite 'end' (iterations)")
        self.epoch_length = epoch_length
        super().__init__(optimizer, param_name, begin=begin, end=end, last_step=last_step, by_epoch=False,
                         verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=INF, by_epoch=True, epoch_length=None, **kwargs):
        if not by_epoch:
            raise ValueError(f"{cls.__name__}: only an epoch-based config (by_epoch=True) is converted to iterations")
        if not epoch_length or epoch_length <= 0:
            raise ValueError(f"{cls.__name__}: epoch_length must be a positive integer, got {epoch_length}")
        end = INF if end == INF else int(end * epoch_length)
        return cls(*args, begin=int(begin * epoch_length), end=end, by_epoch=False, epoch_length=epoch_length,
                   **kwargs)

    @property
    def total_steps(self):
        return self.end - self.begin

    @abc.abstractmethod
    def value_at(self, base, step):
        """The parameter value at ``step`` for an initial value ``base``."""

    def load_state_dict(self, state_dict):
        """Restores the progress of a checkpoint (step counters) but keeps the schedule of the config, as mmcv did
        (it recomputed from ``runner.iter`` and ``max_iters``): resuming with a larger ``max_epochs`` stretches the
        schedule instead of freezing at the old end. With an unchanged config the values are the checkpoint's."""
        if state_dict.get("end") != self.end or state_dict.get("begin") != self.begin:
            print_log(f"{type(self).__name__}: the checkpoint's schedule spans iterations [{state_dict.get('begin')}, "
                      f"{state_dict.get('end')}), the config's [{self.begin}, {self.end}): following the config",
                      logger="current", level=logging.WARNING)
        self._global_step = state_dict["_global_step"]
        self.last_step = state_dict["last_step"]
        if self.begin <= self._global_step < self.end:
            self.last_step = self._global_step - self.begin
            for group, value in zip(self.optimizer.param_groups, self._get_value()):
                group[self.param_name] = value
                if getattr(self, "use_betas", False):  # MomentumSchedulerMixin on an Adam-type optimizer
                    group["betas"] = (value, group["betas"][1])
        self._last_value = [group[self.param_name] for group in self.optimizer.param_groups]

    def _get_value(self):
        return [self.value_at(base, self.last_step) for base in self.base_values]


class _CyclicSchedule(_ClosedFormScheduler):
    """mmcv ``cyclic``: per cycle, anneal from the initial value to ``initial * target_ratio[0]`` over the first
    ``step_ratio_up`` of the cycle, then to ``initial * target_ratio[1]``; ``gamma`` shrinks later cycles' peaks."""

    def __init__(self, optimizer, param_name, target_ratio, cyclic_times=1, step_ratio_up=0.4, anneal_strategy="cos",
                 gamma=1.0, **kwargs):
        self.target_ratio = expand_target_ratio(target_ratio)
        if not 0 <= step_ratio_up < 1:
            raise ValueError(f"step_ratio_up must be in [0, 1), got {step_ratio_up}")
        if int(cyclic_times) != cyclic_times or cyclic_times < 1:
            raise ValueError(f"cyclic_times must be a positive integer, got {cyclic_times}")
        if anneal_strategy not in ANNEALING:
            raise ValueError(f"anneal_strategy must be one of {sorted(ANNEALING)}, got {anneal_strategy!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.cyclic_times = int(cyclic_times)
        self.step_ratio_up = float(step_ratio_up)
        self.anneal_strategy = anneal_strategy
        self.gamma = float(gamma)
        end, begin = kwargs.get("end", INF), kwargs.get("begin", 0)
        if end != INF:
            self.steps_per_cycle = (end - begin) // self.cyclic_times
            if self.steps_per_cycle < 1:
                raise ValueError(f"{end - begin} iterations cannot hold {self.cyclic_times} cycles")
            self.steps_up = int(self.step_ratio_up * self.steps_per_cycle)
        super().__init__(optimizer, param_name, **kwargs)

    def value_at(self, base, step):
        cycle, position = divmod(step, self.steps_per_cycle)
        scale = self.gamma ** cycle
        peak = 1 - scale + self.target_ratio[0] * scale
        anneal = ANNEALING[self.anneal_strategy]
        if position < self.steps_up:
            return anneal(base, base * peak, position / self.steps_up)
        return anneal(base * peak, base * self.target_ratio[1],
                      (position - self.steps_up) / (self.steps_per_cycle - self.steps_up))


@PARAM_SCHEDULERS.register_module()
class MMCVCyclicLR(LRSchedulerMixin, _CyclicSchedule):
    """Learning rate of mmcv's ``lr_config.policy: cyclic`` (see ``_CyclicSchedule``)."""


@PARAM_SCHEDULERS.register_module()
class MMCVCyclicMomentum(MomentumSchedulerMixin, _CyclicSchedule):
    """Momentum (Adam's beta1) of mmcv's ``momentum_config.policy: cyclic``; default ratios ``(0.85 / 0.95, 1)``."""

    def __init__(self, optimizer, target_ratio=(0.85 / 0.95, 1), **kwargs):
        super().__init__(optimizer, target_ratio=target_ratio, **kwargs)


WARMUPS = ("constant", "linear", "exp")


@PARAM_SCHEDULERS.register_module()
class MMCVCosineAnnealingLR(LRSchedulerMixin, _ClosedFormScheduler):
    """mmcv's ``CosineAnnealing`` policy with its optional warm-up.

    The regular value goes from the initial lr to ``min_lr`` (or ``initial * min_lr_ratio``) along a half cosine,
    by epoch (``anneal_by_epoch``, mmcv's default: the value changes at epoch boundaries) or by iteration. During the
    first ``warmup_iters`` iterations (epochs if ``warmup_by_epoch``) it is multiplied by the warm-up factor:
    ``linear``: ``1 - (1 - s / W) (1 - warmup_ratio)``; ``constant``: ``warmup_ratio``; ``exp``:
    ``warmup_ratio ** (1 - s / W)``.
    """

    def __init__(self, optimizer, min_lr=None, min_lr_ratio=None, anneal_by_epoch=True, warmup=None, warmup_iters=0,
                 warmup_ratio=0.1, warmup_by_epoch=False, **kwargs):
        if (min_lr is None) == (min_lr_ratio is None):
            raise ValueError("CosineAnnealing needs exactly one of min_lr and min_lr_ratio")
        if warmup is not None and warmup not in WARMUPS:
            raise ValueError(f"warmup must be one of {WARMUPS} or null, got {warmup!r}")
        if warmup is not None and warmup_iters <= 0:
            raise ValueError(f"warmup {warmup!r} needs warmup_iters > 0, got {warmup_iters}")
        if not 0 < warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {warmup_ratio}")
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        self.anneal_by_epoch = bool(anneal_by_epoch)
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = float(warmup_ratio)
        self.warmup_by_epoch = bool(warmup_by_epoch)
        if (self.anneal_by_epoch or self.warmup_by_epoch) and not kwargs.get("epoch_length"):
            raise ValueError("CosineAnnealing by epoch needs the epoch length: configure it with by_epoch=True and "
                             "convert_to_iter_based=True")
        super().__init__(optimizer, **kwargs)

    def value_at(self, base, step):
        target = base * self.min_lr_ratio if self.min_lr_ratio is not None else self.min_lr
        if self.anneal_by_epoch:
            progress = (step // self.epoch_length) / (self.total_steps // self.epoch_length)
        else:
            progress = step / self.total_steps
        value = annealing_cos(base, target, progress)
        warmup_steps = self.warmup_iters * self.epoch_length if self.warmup_by_epoch else self.warmup_iters
        if self.warmup is None or step >= warmup_steps:
            return value
        if self.warmup == "constant":
            return value * self.warmup_ratio
        if self.warmup == "linear":
            return value * (1 - (1 - step / warmup_steps) * (1 - self.warmup_ratio))
        return value * self.warmup_ratio ** (1 - step / warmup_steps)
