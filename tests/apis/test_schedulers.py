"""mmcv's cyclic and CosineAnnealing(+warm-up) policies as mmengine schedulers, against hand-written formulas."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

from mmdet3d.apis.optim import build_param_scheduler_cfgs, lr_scheduler_cfg, momentum_scheduler_cfg
from mmdet3d.apis.schedulers import expand_target_ratio


def make_wrapper(lr=2e-4, lr_mult=None):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": lr * (lr_mult or 1.0)}]
    return OptimWrapper(torch.optim.AdamW(groups, lr=lr, weight_decay=0.01))


def build(scheduler_cfg, wrapper, epoch_length, max_epochs):
    # As mmengine's runner does: `end` defaults to max_epochs, epochs are converted with the loader length.
    return PARAM_SCHEDULERS.build({**scheduler_cfg, "end": max_epochs},
                                  default_args={"optimizer": wrapper, "epoch_length": epoch_length})


def run(wrapper, schedulers, iterations, key="lr", group=0):
    values = []
    for _ in range(iterations):
        g = wrapper.optimizer.param_groups[group]
        values.append(g[key] if key != "beta1" else g["betas"][0])
        wrapper.step()
        for s in schedulers:
            s.step()
    return values


def test_float_target_ratio_expands_like_mmcv():
    assert expand_target_ratio(5.0) == (5.0, 5e-5)
    assert expand_target_ratio([10, 1e-4]) == (10.0, 1e-4)
    with pytest.raises(ValueError, match="target_ratio"):
        expand_target_ratio([1, 2, 3])


def test_cyclic_lr_matches_the_simdistill_schedule():
    # REFERENCE 1.4: lr 2e-4 -> 1e-3 over the first 40 % of iterations, then -> 1e-8, cosine in both phases.
    wrapper = make_wrapper(2e-4)
    cfg = lr_scheduler_cfg({"policy": "cyclic", "target_ratio": 5.0, "cyclic_times": 1, "step_ratio_up": 0.4})
    lrs = run(wrapper, [build(cfg, wrapper, epoch_length=10, max_epochs=5)], 50)
    expected = [1e-3 + 0.5 * (2e-4 - 1e-3) * (1 + math.cos(math.pi * i / 20)) if i < 20 else
                1e-8 + 0.5 * (1e-3 - 1e-8) * (1 + math.cos(math.pi * (i - 20) / 30)) for i in range(50)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[0] == pytest.approx(2e-4) and lrs[20] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)


def test_cyclic_momentum_drives_adamw_beta1():
    wrapper = make_wrapper()
    cfg = momentum_scheduler_cfg({"policy": "cyclic", "cyclic_times": 1, "step_ratio_up": 0.4})
    betas = run(wrapper, [build(cfg, wrapper, epoch_length=10, max_epochs=5)], 50, key="beta1")
    low = 0.9 * 0.85 / 0.95
    expected = [low + 0.5 * (0.9 - low) * (1 + math.cos(math.pi * i / 20)) if i < 20 else
                0.9 + 0.5 * (low - 0.9) * (1 + math.cos(math.pi * (i - 20) / 30)) for i in range(50)]
    assert betas == pytest.approx(expected, rel=1e-12)
    assert wrapper.optimizer.param_groups[0]["betas"][1] == 0.999


def test_lr_multipliers_scale_the_whole_schedule():
    wrapper = make_wrapper(1e-3, lr_mult=0.1)
    cfg = lr_scheduler_cfg({"policy": "cyclic", "target_ratio": [10, 1e-4], "step_ratio_up": 0.4})
    scheduler = build(cfg, wrapper, epoch_length=4, max_epochs=3)
    full, scaled = [], []
    for _ in range(12):
        full.append(wrapper.optimizer.param_groups[0]["lr"])
        scaled.append(wrapper.optimizer.param_groups[1]["lr"])
        wrapper.step()
        scheduler.step()
    assert scaled == pytest.approx([0.1 * v for v in full], rel=1e-12)


def test_cosine_annealing_by_epoch_with_linear_warmup():
    base, epochs, epoch_length, warmup_iters, ratio = 1e-3, 4, 5, 7, 1 / 3
    wrapper = make_wrapper(base)
    cfg = lr_scheduler_cfg({"policy": "CosineAnnealing", "warmup": "linear", "warmup_iters": warmup_iters,
                            "warmup_ratio": ratio, "min_lr_ratio": 1e-3})
    lrs = run(wrapper, [build(cfg, wrapper, epoch_length, epochs)], epochs * epoch_length)

    def expected(i):
        regular = 1e-6 + 0.5 * (base - 1e-6) * (1 + math.cos(math.pi * (i // epoch_length) / epochs))
        return regular * (1 - (1 - i / warmup_iters) * (1 - ratio)) if i < warmup_iters else regular

    assert lrs == pytest.approx([expected(i) for i in range(len(lrs))], rel=1e-12)
    assert lrs[0] == pytest.approx(base * ratio)
    assert lrs[10:15] == [lrs[10]] * 5  # constant within an epoch once warm-up is over


def test_cosine_annealing_by_iteration():
    wrapper = make_wrapper(1e-3)
    cfg = lr_scheduler_cfg({"policy": "CosineAnnealing", "by_epoch": False, "min_lr": 1e-5})
    lrs = run(wrapper, [build(cfg, wrapper, epoch_length=5, max_epochs=2)], 10)
    assert lrs == pytest.approx([1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * i / 10)) for i in range(10)])


def test_resumed_schedulers_continue_the_same_sequence():
    cfgs = build_param_scheduler_cfgs({"lr_config": {"policy": "cyclic", "target_ratio": 5.0},
                                       "momentum_config": {"policy": "cyclic"}})
    wrapper = make_wrapper()
    schedulers = [build(c, wrapper, 6, 4) for c in cfgs]
    reference = run(wrapper, schedulers, 24)

    first = make_wrapper()
    first_schedulers = [build(c, first, 6, 4) for c in cfgs]
    run(first, first_schedulers, 13)
    optimizer_state = first.state_dict()
    states = [s.state_dict() for s in first_schedulers]

    resumed = make_wrapper()
    resumed.load_state_dict(optimizer_state)
    resumed_schedulers = [build(c, resumed, 6, 4) for c in cfgs]
    for s, state in zip(resumed_schedulers, states):
        s.load_state_dict(state)
    assert run(resumed, resumed_schedulers, 11) == pytest.approx(reference[13:], rel=1e-12)


def test_resuming_with_more_epochs_follows_the_new_schedule():
    cfg = lr_scheduler_cfg({"policy": "cyclic", "target_ratio": 5.0})
    first = make_wrapper()
    scheduler = build(cfg, first, 5, 2)
    run(first, [scheduler], 10)
    state = scheduler.state_dict()

    longer = make_wrapper()
    reference = run(longer, [build(cfg, longer, 5, 4)], 20)
    resumed = make_wrapper()
    resumed.load_state_dict(first.state_dict())
    resumed_scheduler = build(cfg, resumed, 5, 4)
    resumed_scheduler.load_state_dict(state)
    assert run(resumed, [resumed_scheduler], 10) == pytest.approx(reference[10:], rel=1e-12)


@pytest.mark.parametrize("lr_config, message", [
    ({"policy": "step", "step": [8, 11]}, "lr_config.policy"),
    ({"policy": "cyclic", "target_ratio": 5.0, "warmup": "linear"}, "warmup"),
    ({"policy": "cyclic", "by_epoch": True}, "by_epoch"),
    ({"target_ratio": 5.0}, "policy"),
])
def test_unsupported_lr_config_is_named(lr_config, message):
    with pytest.raises(ValueError, match=message):
        lr_scheduler_cfg(lr_config)


def test_cosine_needs_one_minimum():
    wrapper = make_wrapper()
    with pytest.raises(ValueError, match="min_lr"):
        build(lr_scheduler_cfg({"policy": "CosineAnnealing"}), wrapper, 5, 2)
