"""``tools/train.py`` and ``tools/test.py`` as users run them: one process, ``torchrun`` with 2 gloo processes, a killed
and resumed run; on the toy model of ``toy_components.py``."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from helpers.tools import load_tool
from mmdet3d.utils.checkpoint import read_checkpoint
from mmdet3d.apis.optim import build_optim_wrapper_cfg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TRAIN = os.path.join(REPO, "tools", "train.py")
TEST = os.path.join(REPO, "tools", "test.py")
EPOCHS, TRAIN_SAMPLES, VAL_SAMPLES = 3, 16, 7

TOY_CONFIG = {
    "custom_imports": {"imports": ["toy_components"], "allow_failed_imports": False},
    "model": {"type": "ToyDetector", "hidden": 8},
    "seed": 0,
    "deterministic": False,
    "max_epochs": EPOCHS,
    "load_from": None,
    "resume_from": None,
    "data": {"samples_per_gpu": 4, "workers_per_gpu": 0,
             "train": {"type": "ToyDetDataset", "num_samples": TRAIN_SAMPLES, "delay": 0.0},
             "val": {"type": "ToyDetDataset", "num_samples": VAL_SAMPLES},
             "test": {"type": "ToyDetDataset", "num_samples": VAL_SAMPLES}},
    "evaluator": {"type": "ToyOrderMetric", "num_samples": VAL_SAMPLES},
    "evaluation": {"interval": 0},
    "optimizer": {"type": "AdamW", "lr": 0.01, "weight_decay": 0.01},
    "optimizer_config": {"grad_clip": {"max_norm": 35, "norm_type": 2}},
    "lr_config": {"policy": "cyclic", "target_ratio": 5.0, "cyclic_times": 1, "step_ratio_up": 0.4},
    "momentum_config": {"policy": "cyclic", "cyclic_times": 1, "step_ratio_up": 0.4},
    "checkpoint_config": {"interval": 1, "max_keep_ckpts": 5},
    "log_config": {"interval": 1},
    "fp16": None,
}


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, HERE]), "OMP_NUM_THREADS": "1"}


def launch(args, processes=1):
    prefix = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return prefix + [str(a) for a in args]


def run(args, cwd, processes=1, timeout=180):
    result = subprocess.run(launch(args, processes), cwd=cwd, env=env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def scalars(run_dir):
    """Per-iteration logged scalars of every launch in the run folder, by global step."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "*", "vis_data", "scalars.json"))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "loss" in row:
                    rows[row["step"]] = row
    return rows


def assert_states_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.allclose(a[key], b[key], atol=atol, rtol=1e-5), key
        elif isinstance(a[key], dict):
            assert_states_close(a[key], b[key], atol)
        else:
            assert a[key] == pytest.approx(b[key]), key


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "toy.yaml"
    config.write_text(yaml.safe_dump(TOY_CONFIG))
    return root, str(config)


@pytest.fixture(scope="module")
def single_run(workspace):
    """The reference: one process (in this one, to save a start-up), batch 4, 3 epochs."""
    root, config = workspace
    run_dir = root / "single"
    assert load_tool("train").main([config, "--run-dir", str(run_dir)]) == 0
    return str(run_dir)


def test_cli_overrides_reach_the_config(workspace, tmp_path, capsys):
    _, config = workspace
    train = load_tool("train")
    args, overrides = train.parse_args([config, "--max_epochs", "5", "--optimizer.lr", "0.02",
                                        "--data.samples_per_gpu", "2", "--checkpoint_config.max_keep_ckpts", "1",
                                        "--run-dir", str(tmp_path / "r"), "--load_from", "teacher.pth"])
    assert args.run_dir == str(tmp_path / "r") and not args.resume
    cfg = train.load_train_config(args, overrides)
    assert cfg.max_epochs == 5 and cfg.optimizer.lr == 0.02 and cfg.data.samples_per_gpu == 2
    assert cfg.checkpoint_config.max_keep_ckpts == 1 and cfg.load_from == "teacher.pth"
    assert build_optim_wrapper_cfg(cfg)["optimizer"]["lr"] == 0.02
    assert train.default_run_dir(config) == os.path.join("runs", "toy")

    assert train.main([config, "--optimizer.lrr", "0.1", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optimizer.lrr" in err


def test_a_training_run_writes_its_run_directory(single_run):
    names = set(os.listdir(single_run))
    assert {"configs.yaml", "epoch_1.pth", "epoch_2.pth", "epoch_3.pth", "latest.pth"} <= names
    with open(os.path.join(single_run, "configs.yaml")) as f:
        assert yaml.safe_load(f)["optimizer"] == TOY_CONFIG["optimizer"]
    (launch_dir,) = [d for d in glob.glob(os.path.join(single_run, "*")) if os.path.isdir(d)]
    assert glob.glob(os.path.join(launch_dir, "*.log"))
    assert glob.glob(os.path.join(launch_dir, "vis_data", "events.out.tfevents.*"))
    assert sorted(scalars(single_run)) == list(range(1, EPOCHS * TRAIN_SAMPLES // 4 + 1))


def test_load_from_starts_from_the_given_weights(workspace, single_run, tmp_path, capsys):
    _, config = workspace
    train = load_tool("train")
    checkpoint = os.path.join(single_run, "latest.pth")
    run_dir = tmp_path / "finetune"
    # lr 0: the weights cannot move, so the run ends with exactly the loaded ones.
    assert train.main([config, "--load_from", checkpoint, "--max_epochs", "1", "--optimizer.lr", "0",
                       "--run-dir", str(run_dir)]) == 0
    assert_states_close(read_checkpoint(str(run_dir / "latest.pth"))["state_dict"],
                        read_checkpoint(checkpoint)["state_dict"], atol=0)

    capsys.readouterr()
    assert train.main([config, "--load_from", checkpoint, "--model.hidden", "4", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and checkpoint in err and "encoder.weight: checkpoint [8, 8] vs model [4, 8]" in err


def test_validation_writes_metrics_per_evaluation(workspace, tmp_path):
    root, config = workspace
    run_dir = tmp_path / "with_val"
    result = run([TRAIN, config, "--run-dir", run_dir, "--max_epochs", "2", "--evaluation.interval", "1"], cwd=root)
    for epoch in (1, 2):
        with open(run_dir / f"metrics_epoch_{epoch}.json") as f:
            metrics = json.load(f)
        assert metrics["toy/count"] == VAL_SAMPLES and metrics["toy/in_order"] == 1.0
    assert "train 2/2" in result.stderr and "val" in result.stderr  # progress bars


def test_two_processes_give_the_same_losses_as_one(workspace, single_run):
    root, config = workspace
    run_dir = root / "two"
    run([TRAIN, config, "--run-dir", run_dir, "--data.samples_per_gpu", "2"], cwd=root, processes=2)
    one, two = scalars(single_run), scalars(str(run_dir))
    assert sorted(two) == sorted(one)
    for step in sorted(one):
        for key in ("loss", "lr", "grad_norm"):
            assert two[step][key] == pytest.approx(one[step][key], rel=1e-5), (step, key)
    assert_states_close(read_checkpoint(os.path.join(single_run, "latest.pth"))["state_dict"],
                        read_checkpoint(str(run_dir / "latest.pth"))["state_dict"])


def test_a_killed_run_resumes_where_it_stopped(workspace, single_run):
    root, config = workspace
    run_dir = root / "killed"
    process = subprocess.Popen(launch([TRAIN, config, "--run-dir", run_dir, "--data.train.delay", "0.1"]),
                               cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "latest.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "epoch_2.pth").exists(), "the run finished epoch 2 before it could be killed"
    assert read_checkpoint(str(run_dir / "latest.pth"))["meta"]["epoch"] == 1

    result = run([TRAIN, config, "--run-dir", run_dir, "--resume"], cwd=root)
    assert f"start     resuming {run_dir / 'latest.pth'} at epoch 1, iteration 4" in result.stdout
    reference, resumed = scalars(single_run), scalars(str(run_dir))
    assert sorted(resumed) == sorted(reference)
    for step in range(5, EPOCHS * TRAIN_SAMPLES // 4 + 1):
        assert resumed[step]["epoch"] == reference[step]["epoch"]
        for key in ("loss", "lr"):
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=1e-6), (step, key)
    final, expected = (read_checkpoint(os.path.join(d, "latest.pth")) for d in (str(run_dir), single_run))
    assert final["meta"]["epoch"] == EPOCHS and final["meta"]["iter"] == expected["meta"]["iter"]
    assert_states_close(final["state_dict"], expected["state_dict"])
    assert_states_close(final["optimizer"]["state"], expected["optimizer"]["state"])
    assert final["param_schedulers"][0]["last_step"] == expected["param_schedulers"][0]["last_step"]


def test_two_process_evaluation_equals_one_process(workspace, single_run, capsys):
    root, config = workspace
    checkpoint = os.path.join(single_run, "latest.pth")
    one, two = root / "metrics_1.json", root / "metrics_2.json"
    assert load_tool("test").main([config, checkpoint, "--eval", "bbox", "--out", str(one),
                                 "--run-dir", str(root / "test1")]) == 0
    assert "toy/in_order" in capsys.readouterr().out  # the metrics table
    run([TEST, config, checkpoint, "--eval", "bbox", "--out", two, "--run-dir", root / "test2"], cwd=root, processes=2)
    with open(one) as f1, open(two) as f2:
        metrics_one, metrics_two = json.load(f1), json.load(f2)
    # 7 samples over 2 processes: the sampler pads rank 1 with sample 0; gathering drops it and restores the order.
    assert metrics_one["toy/count"] == VAL_SAMPLES and metrics_one["toy/in_order"] == 1.0
    assert metrics_two == pytest.approx(metrics_one, rel=1e-6)


def test_test_cli_reports_bad_checkpoints_in_one_line(workspace, single_run, tmp_path, capsys):
    _, config = workspace
    test = load_tool("test")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(open(os.path.join(single_run, "latest.pth"), "rb").read()[:1000])
    assert test.main([config, str(corrupt), "--eval", "bbox", "--run-dir", str(tmp_path / "t1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(corrupt) in err and "not a readable checkpoint" in err

    checkpoint = os.path.join(single_run, "latest.pth")
    assert test.main([config, checkpoint, "--model.hidden", "16", "--run-dir", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and checkpoint in err
    assert "encoder.weight: checkpoint [8, 8] vs model [16, 8]" in err


def test_console_shows_a_short_summary_and_the_log_keeps_everything(workspace, tmp_path):
    root, config = workspace
    run_dir = tmp_path / "quiet"
    result = run([TRAIN, config, "--run-dir", run_dir, "--max_epochs", "1"], cwd=root)
    out = result.stdout.strip().splitlines()
    assert len(out) <= 12, out
    assert out[0].startswith("config    ") and any(line.startswith("data      train 16 samples") for line in out)
    assert not any(noise in result.stdout + result.stderr for noise in ("System environment", "Hooks will be",
                                                                         "has no metainfo", "HardDiskBackend"))
    (log,) = glob.glob(os.path.join(run_dir, "*", "*.log"))
    text = open(log).read()
    assert "System environment" in text and "Config:" in text and "\x1b[" not in text


def test_resuming_a_finished_run_says_so(workspace, single_run, capsys):
    _, config = workspace
    assert load_tool("train").main([config, "--run-dir", single_run, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "has finished its schedule (3 of 3 epochs); nothing to resume" in out
