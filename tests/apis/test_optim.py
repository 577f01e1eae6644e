"""Translation of optimizer / optimizer_config / fp16 into mmengine's optim wrapper, and its behaviour."""
import pytest
import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from torch import nn

from mmdet3d.apis.optim import amp_settings, build_optim_wrapper_cfg


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Linear(2, 2)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(3))


class Encoders(nn.Module):
    def __init__(self):
        super().__init__()
        self.camera = nn.Module()
        self.camera.backbone = Backbone()


class TeacherStudent(nn.Module):
    """Parameter names as in the SimDistill model: the teacher's ``encoders.camera.backbone`` and the student's
    ``encoders_student.camera.backbone``."""

    def __init__(self):
        super().__init__()
        self.encoders = Encoders()
        self.encoders_student = Encoders()
        self.head = nn.Linear(2, 1)


SIMDISTILL_OPTIMIZER = {
    "type": "AdamW", "lr": 2.0e-4, "weight_decay": 0.01,
    "paramwise_cfg": {"custom_keys": {
        "absolute_pos_embed": {"decay_mult": 0},
        "relative_position_bias_table": {"decay_mult": 0},
        "encoders.camera.backbone": {"lr_mult": 0.1},
    }},
}


def groups_by_name(model, wrapper):
    by_param = {id(p): g for g in wrapper.optimizer.param_groups for p in g["params"]}
    return {name: by_param[id(p)] for name, p in model.named_parameters()}


def test_custom_keys_are_substring_matches_as_in_mmcv():
    model = TeacherStudent()
    cfg = build_optim_wrapper_cfg({"optimizer": SIMDISTILL_OPTIMIZER})
    groups = groups_by_name(model, build_optim_wrapper(model, cfg))
    assert isinstance(build_optim_wrapper(model, cfg).optimizer, torch.optim.AdamW)
    # REFERENCE 1.4: the 0.1 applies to the teacher's backbone only; the student's name does not contain the key.
    assert groups["encoders.camera.backbone.conv.weight"]["lr"] == pytest.approx(2e-5)
    assert groups["encoders_student.camera.backbone.conv.weight"]["lr"] == pytest.approx(2e-4)
    assert groups["head.weight"]["lr"] == pytest.approx(2e-4)
    assert groups["head.weight"]["weight_decay"] == pytest.approx(0.01)
    # The longest matching key wins: the bias table of the teacher backbone gets decay 0 (and the default lr).
    assert groups["encoders_student.camera.backbone.relative_position_bias_table"]["weight_decay"] == 0
    assert groups["encoders.camera.backbone.relative_position_bias_table"]["weight_decay"] == 0


def test_gradient_clipping_bounds_the_update():
    model = nn.Linear(3, 1, bias=False)
    cfg = build_optim_wrapper_cfg({"optimizer": {"type": "SGD", "lr": 1.0},
                                   "optimizer_config": {"grad_clip": {"max_norm": 0.5, "norm_type": 2}}})
    wrapper = build_optim_wrapper(model, cfg)
    before = model.weight.detach().clone()
    wrapper.update_params(1000.0 * model(torch.ones(1, 3)).sum())
    assert torch.linalg.vector_norm(model.weight.detach() - before) == pytest.approx(0.5, rel=1e-5)


def test_cumulative_iters_steps_every_n_iterations_with_the_mean_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    model = nn.Linear(3, 1, bias=False)
    reference = nn.Linear(3, 1, bias=False)
    reference.load_state_dict(model.state_dict())
    cfg = build_optim_wrapper_cfg({"optimizer": {"type": "SGD", "lr": 0.1},
                                   "optimizer_config": {"cumulative_iters": 2}})
    assert cfg["accumulative_counts"] == 2
    wrapper = build_optim_wrapper(model, cfg)
    wrapper.initialize_count_status(model, 0, 2)
    start = model.weight.detach().clone()
    wrapper.update_params(model(x[:2]).pow(2).mean())
    assert torch.equal(model.weight.detach(), start)  # no step after the first of two iterations
    wrapper.update_params(model(x[2:]).pow(2).mean())
    plain = torch.optim.SGD(reference.parameters(), lr=0.1)
    ((reference(x[:2]).pow(2).mean() + reference(x[2:]).pow(2).mean()) / 2).backward()
    plain.step()
    assert torch.allclose(model.weight, reference.weight, atol=1e-7)


def test_amp_settings():
    assert amp_settings(None) is None
    assert amp_settings({"loss_scale": {"growth_interval": 2000}}) == {
        "dtype": "float16", "loss_scale": {"growth_interval": 2000}}
    assert amp_settings({"loss_scale": 512}) == {"dtype": "float16", "loss_scale": 512.0}
    assert amp_settings({"loss_scale": "dynamic"})["loss_scale"] == "dynamic"
    assert amp_settings({"dtype": "bfloat16"}) == {"dtype": "bfloat16", "loss_scale": 1.0}
    with pytest.raises(ValueError, match="fp16: unsupported key"):
        amp_settings({"loss_scal": 512})
    with pytest.raises(ValueError, match="fp16.dtype"):
        amp_settings({"dtype": "float8"})


def test_fp16_falls_back_to_fp32_on_cpu_with_a_warning():
    with pytest.warns(UserWarning, match="needs a GPU"):
        cfg = build_optim_wrapper_cfg({"optimizer": {"type": "AdamW", "lr": 1e-3},
                                       "fp16": {"loss_scale": {"growth_interval": 2000}}}, device_type="cpu")
    assert cfg["type"] == "OptimWrapper"
    assert isinstance(build_optim_wrapper(nn.Linear(2, 1), cfg), OptimWrapper)


def test_fp16_selects_the_amp_wrapper_on_gpu():
    cfg = build_optim_wrapper_cfg({"optimizer": {"type": "AdamW", "lr": 1e-3},
                                   "fp16": {"loss_scale": {"growth_interval": 2000}}}, device_type="cuda")
    assert cfg == {"type": "AmpOptimWrapper", "optimizer": {"type": "AdamW", "lr": 1e-3}, "dtype": "float16",
                   "loss_scale": {"growth_interval": 2000}}
    if torch.cuda.is_available():
        wrapper = build_optim_wrapper(nn.Linear(2, 1).cuda(), cfg)
        assert isinstance(wrapper, AmpOptimWrapper) and wrapper.loss_scaler.get_growth_interval() == 2000


def test_bad_optimisation_sections_are_named():
    with pytest.raises(ValueError, match="'optimizer'"):
        build_optim_wrapper_cfg({})
    with pytest.raises(ValueError, match=r"optimizer_config: unsupported key\(s\) \['grad_clipping'\]"):
        build_optim_wrapper_cfg({"optimizer": {"type": "AdamW", "lr": 1e-3},
                                 "optimizer_config": {"grad_clipping": {"max_norm": 35}}})
    with pytest.raises(ValueError, match="cumulative_iters"):
        build_optim_wrapper_cfg({"optimizer": {"type": "AdamW", "lr": 1e-3},
                                 "optimizer_config": {"cumulative_iters": 0}})
