"""In-process runners on the test-only toy model, dataset and metric of ``tests/tools/toy_components.py``."""
import copy
import importlib.util
import os

import pytest
import yaml

from mmdet3d.utils.config import load_config

TOY_MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "toy_components.py")

TOY_CONFIG = {
    "model": {"type": "ToyDetector", "hidden": 8},
    "seed": 0,
    "deterministic": False,
    "max_epochs": 2,
    "load_from": None,
    "resume_from": None,
    "data": {"samples_per_gpu": 4, "workers_per_gpu": 0,
             "train": {"type": "ToyDetDataset", "num_samples": 8},
             "val": {"type": "ToyDetDataset", "num_samples": 5},
             "test": {"type": "ToyDetDataset", "num_samples": 5}},
    "evaluator": {"type": "ToyOrderMetric", "num_samples": 5},
    "evaluation": {"interval": 0},
    "optimizer": {"type": "AdamW", "lr": 0.01, "weight_decay": 0.01},
    "optimizer_config": {"grad_clip": {"max_norm": 35, "norm_type": 2}},
    "lr_config": {"policy": "cyclic", "target_ratio": 5.0, "cyclic_times": 1, "step_ratio_up": 0.4},
    "momentum_config": {"policy": "cyclic", "cyclic_times": 1, "step_ratio_up": 0.4},
    "checkpoint_config": {"interval": 1, "max_keep_ckpts": 5},
    "log_config": {"interval": 1},
    "fp16": None,
}


@pytest.fixture(scope="session")
def toy():
    spec = importlib.util.spec_from_file_location("toy_components", TOY_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy_config(toy, tmp_path):
    """``toy_config(**changes)`` -> the toy training config (top-level keys replaced), written to ``toy.yaml`` and
    loaded like any config."""

    def make(**changes):
        cfg = copy.deepcopy(TOY_CONFIG)
        cfg.update(copy.deepcopy(changes))
        path = tmp_path / "toy.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return load_config(str(path))

    return make
