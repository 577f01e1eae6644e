import glob
import os
import textwrap

import pytest

from mmdet3d.utils.config import ConfigError, config_chain, load_config, split_cli_overrides

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "configs"
    write(str(root / "default.yaml"), """
        a: 1
        lr: 0.1
        sched: {type: cosine, warmup: 10}
        shape: [256, 704]
        deep: {x: {y: 1, z: 2}}
    """)
    write(str(root / "det" / "default.yaml"), """
        a: 2
        sched: null
        deep: {x: {z: 3}}
    """)
    leaf = write(str(root / "det" / "cam" / "model.yaml"), """
        sched: {type: cyclic}
        feature: ${[s // 8 for s in shape]}
        ref: ${deep.x.z}
        nested: {inner: "${a * 10}"}
    """)
    return leaf


def test_merge_order_and_semantics(tree):
    cfg = load_config(tree)
    assert cfg.a == 2  # deeper default.yaml wins over the root
    assert cfg.sched == {"type": "cyclic"}  # `null` wiped the cosine dict; the later dict replaced it whole
    assert cfg.deep.x == {"y": 1, "z": 3}  # dicts merge deeply
    assert cfg.feature == [32, 88]
    assert cfg.ref == 3
    assert cfg.nested.inner == 20


def test_chain_stops_at_configs_root(tree, tmp_path):
    write(str(tmp_path / "default.yaml"), "a: 99\n")  # above configs/: must not be read
    chain = config_chain(tree)
    assert [os.path.relpath(p, tmp_path) for p in chain] == [
        "configs/default.yaml", "configs/det/default.yaml", "configs/det/cam/model.yaml"]
    assert load_config(tree).a == 2


def test_overrides_are_yaml_typed_and_feed_expressions(tree):
    cfg = load_config(tree, ["--lr", "3e-4", "--shape", "[128, 352]", "--deep.x.y", "null", "--a=true"])
    assert cfg.lr == pytest.approx(3e-4) and isinstance(cfg.lr, float)
    assert cfg.shape == [128, 352]
    assert cfg.feature == [16, 44]  # overrides apply before ${} evaluation
    assert cfg.deep.x.y is None
    assert cfg.a is True


def test_override_of_unknown_key_names_it(tree):
    with pytest.raises(ConfigError, match="deep.q"):
        load_config(tree, ["--deep.q.r", "1"])
    with pytest.raises(ConfigError, match="'lrr'"):
        load_config(tree, ["--lrr", "1"])


def test_failing_expression_names_the_key(tmp_path):
    leaf = write(str(tmp_path / "configs" / "bad.yaml"), """
        model: {head: {size: "${missing_key + 1}"}}
    """)
    with pytest.raises(ConfigError, match=r"model\.head\.size.*missing_key"):
        load_config(leaf)


def test_cli_split_errors():
    assert split_cli_overrides(["--a.b", "1", "--c=x"]) == [("a.b", "1"), ("c", "x")]
    with pytest.raises(ConfigError, match="no value"):
        split_cli_overrides(["--a"])
    with pytest.raises(ConfigError, match="must look like"):
        split_cli_overrides(["a", "1"])


def test_base_includes_another_tree(tmp_path):
    root = tmp_path / "configs"
    write(str(root / "default.yaml"), "x: 0\nname: root\n")
    write(str(root / "nuscenes" / "default.yaml"), "x: 1\nsize: [1, 2]\nds: ${x * 2}\n")
    leaf = write(str(root / "synthetic" / "default.yaml"), "_base_: ../nuscenes/default.yaml\nsize: [3]\n")
    cfg = load_config(leaf)
    assert cfg.x == 1 and cfg.size == [3] and cfg.ds == 2 and cfg.name == "root"
    assert "_base_" not in cfg


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("configs/nope.yaml")


# configs/experiments/ holds experiment specs of tools/experiment.py, not configs (tests/tools/test_experiment.py).
SHIPPED_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                         if os.sep + "experiments" + os.sep not in p)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert "object_classes" in cfg or os.path.basename(path) == "default.yaml"


def test_expressions_may_use_expressions_and_cycles_are_named(tmp_path):
    leaf = write(str(tmp_path / "configs" / "chain.yaml"), """
        c: 2
        b: ${c + 1}
        a: ${b * 2}
        sub: {x: "${a}", y: ["${sub.x}", 1]}
        view: ${sub}
    """)
    cfg = load_config(leaf)
    assert (cfg.a, cfg.b, cfg.sub.y, cfg.view) == (6, 3, [6, 1], {"x": 6, "y": [6, 1]})
    cyclic = write(str(tmp_path / "configs" / "cycle.yaml"), "p: ${q}\nq: ${p}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(cyclic)


def test_delete_replaces_an_inherited_dict(tmp_path):
    root = tmp_path / "configs"
    write(str(root / "default.yaml"), "sched: {policy: cyclic, target_ratio: 5.0}\nopt: {lr: 1, wd: 2}\n")
    leaf = write(str(root / "x.yaml"), "sched: {_delete_: true, policy: cosine}\nopt: {lr: 3}\n")
    cfg = load_config(leaf)
    assert cfg.sched == {"policy": "cosine"}
    assert cfg.opt == {"lr": 3, "wd": 2}


MODEL_CONFIGS = [p for p in SHIPPED_CONFIGS if os.path.basename(p) != "default.yaml"]


def _leaves(node, prefix):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, node


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_model_key_is_overridable_at_its_merged_path(path):
    """Every leaf under ``model`` of the evaluated config takes an override at that path (many of them lie inside
    ``${camera_neck}``-style subtrees), and a changed value lands there without touching the key it came from."""
    import yaml
    cfg = load_config(path)
    leaves = [(key, value) for key, value in _leaves(cfg.to_dict()["model"], "model")
              if not isinstance(value, list) or value]
    overrides = [(key, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip())
                 for key, value in leaves]
    again = load_config(path, overrides)
    assert again.to_dict()["model"] == cfg.to_dict()["model"]
    camera = cfg.model.get("encoders", {}).get("camera")
    if isinstance(camera, dict):
        backbone_type = camera["backbone"]["type"]
        changed = load_config(path, ["--model.encoders.camera.backbone.type", "Other",
                                     "--model.encoders.camera.vtransform.dbound", "[1.0, 60.0, 0.25]"])
        assert changed.model.encoders.camera.backbone.type == "Other"
        assert changed.model.encoders.camera.vtransform.dbound == [1.0, 60.0, 0.25]
        assert changed.camera_vtransform.dbound == cfg.camera_vtransform.dbound
        assert [v for k, v in _leaves(changed.to_dict(), "") if k.endswith(".type") and v == "Other"] == ["Other"]
        assert backbone_type != "Other"


def test_alias_overrides_still_feed_the_model():
    cfg = load_config(os.path.join(REPO, "configs", "synthetic", "det", "camera_lss.yaml"),
                      ["--camera_vtransform.type", "DepthLSSTransform"])
    assert cfg.model.encoders.camera.vtransform.type == "DepthLSSTransform"
