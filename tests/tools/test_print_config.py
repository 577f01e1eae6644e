"""``tools/print_config.py``: the merged, evaluated config with overrides, as YAML that loads back to the same tree."""
import os

import yaml

from helpers.tools import load_tool
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")


def main(argv):
    return load_tool("print_config").main(argv)


def test_prints_the_evaluated_config_with_overrides(capsys):
    assert main([CONFIG, "--model.encoders.camera.backbone.depth", "34"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(CONFIG, ["--model.encoders.camera.backbone.depth", "34"]).to_dict()
    assert printed == expected
    assert printed["model"]["encoders"]["camera"]["backbone"]["depth"] == 34
    assert printed["model"]["encoders"]["camera"]["vtransform"]["feature_size"] == [12, 32]  # ${} evaluated


def test_unknown_key_is_one_line(capsys):
    assert main([CONFIG, "--nope", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'nope' exists nowhere" in err
