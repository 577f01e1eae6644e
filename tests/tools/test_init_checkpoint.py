"""``tools/init_checkpoint.py``: a seeded untrained checkpoint that loads strictly into the config's model."""
import os

import torch

from helpers.tools import load_tool
from helpers.fake_batch import TINY, tiny_config
from mmdet3d.registry import MODELS
from mmdet3d.utils.checkpoint import load_checkpoint, read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml")


def run_tool(argv):
    return load_tool("init_checkpoint").main(argv)


def test_writes_the_seeded_initialisation(tmp_path, capsys):
    import mmdet3d.models  # noqa: F401  (registers the models)

    out = tmp_path / "sub" / "init.pth"
    assert run_tool([CONFIG, "--out", str(out), "--seed", "3"] + TINY) == 0
    assert "untrained" in capsys.readouterr().out
    checkpoint = read_checkpoint(out)
    assert checkpoint["meta"] == {"untrained": True, "seed": 3, "config": CONFIG}

    torch.manual_seed(3)
    expected = MODELS.build(tiny_config("camera_lss.yaml").model)
    for key, value in expected.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][key], value), key

    torch.manual_seed(4)
    other = MODELS.build(tiny_config("camera_lss.yaml").model)
    load_checkpoint(other, str(out))
    weight = next(k for k, v in expected.state_dict().items() if v.is_floating_point() and v.numel() > 1)
    assert torch.equal(other.state_dict()[weight], expected.state_dict()[weight])


def test_config_without_model_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "empty.yaml"
    config.write_text("max_epochs: 1\n")
    out = tmp_path / "init.pth"
    assert run_tool([str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "empty.yaml" in err and "'model'" in err
    assert not out.exists()
