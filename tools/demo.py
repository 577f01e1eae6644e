"""The end-to-end demo on generated data, on any machine:

1. generate a nuScenes-format dataset and build its info files; score its ground truth with the devkit (the oracle
   must reach mAP = NDS = 1.000);
2. train the small LiDAR-camera teacher;
3. train the camera-only student without distillation (baseline) and with SimDistill, from the same teacher and
   the same initialisation;
4. score the three with the nuscenes-devkit, print one table, write ``results.json`` and pictures.

    python tools/demo.py [--data-dir data/synthetic] [--run-dir runs/demo] [--teacher-epochs 4] [--student-epochs 3]
                         [--frames-per-scene 10]

The default schedule is sized for about 15 minutes on two CPU cores: enough to show the loop working end to end,
not to converge (see the README for longer runs); the last lines say so, with the scale and schedule that ran.
"""
import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import time

from mmdet3d.datasets.nuscenes_converter import create_nuscenes_infos
from mmdet3d.datasets.synthetic import generate
from mmdet3d.evaluation import score_ground_truth
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "synthetic")
VERSION = "v1.0-mini"
CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]
MODELS = (("teacher", "teacher.yaml"), ("baseline", "baseline.yaml"), ("simdistill", "simdistill.yaml"))


class Stages:
    def __init__(self, total):
        self.total, self.done, self.times = total, 0, {}

    def start(self, title):
        self.done += 1
        self.title, self.t0 = title, time.time()
        print(f"\n== [{self.done}/{self.total}] {title} ==", flush=True)

    def end(self):
        self.times[self.title] = time.time() - self.t0


def run_tool(args):
    """Runs a tool of this repository in a child process (its progress bars show); stops the demo if it fails."""
    cmd = [sys.executable, os.path.join(REPO, "tools", args[0])] + [str(a) for a in args[1:]]
    print("$ " + " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd[1:]), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    if subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
        sys.exit(f"demo: {args[0]} failed (command above)")


def prepare_data(data_dir, seed, frames_per_scene):
    if os.path.isfile(os.path.join(data_dir, VERSION, "sample.json")) and os.path.isfile(
            os.path.join(data_dir, "nuscenes_infos_val.pkl")):
        print(f"{data_dir} already holds the dataset: reusing it (delete the folder to regenerate)")
        return
    summary = generate(data_dir, version=VERSION, seed=seed, frames_per_scene=frames_per_scene)
    print(f"{summary['samples']} samples, {summary['boxes']} boxes, {summary['bytes'] / 1e6:.0f} MB "
          f"in {summary['seconds']:.0f} s")
    create_nuscenes_infos(data_dir, VERSION, max_sweeps=10)


def frames(data_dir, split):
    with open(os.path.join(data_dir, f"nuscenes_infos_{split}.pkl"), "rb") as f:
        return len(pickle.load(f)["infos"])


def scale_of(data_dir, epochs, batch_size):
    """What the demo trained: frames of each split and iterations per model."""
    train = frames(data_dir, "train")
    return {"train_frames": train, "val_frames": frames(data_dir, "val"), "batch_size": batch_size,
            "iterations": {name: n * math.ceil(train / batch_size) for name, n in epochs.items()}}


def meaning(scale):
    its = scale["iterations"]
    return (f"what these numbers mean: {scale['train_frames']} training frames, {its['teacher']} iterations for the "
            f"teacher and {its['baseline']} for each student (batch {scale['batch_size']}), scored on "
            f"{scale['val_frames']} frames of other scenes: a check that the loop runs, not trained models (for those, "
            "the README's 40-scene runs, 'SimDistill on the generated data')")


def table(results):
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ["mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE"] + [f"AP/{c}" for c in CLASSES]:
        lines.append(f"| {key} | " + " | ".join(f"{results[n].get(key, float('nan')):.3f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--vis-samples", type=int, default=4)
    parser.add_argument("--frames-per-scene", type=int, default=10,
                        help="key frames per scene of the generated dataset (10 scenes; default 10)")
    args = parser.parse_args(argv)
    data_dir = os.path.abspath(args.data_dir) + "/"
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    stages = Stages(total=7)
    common = ["--dataset_root", data_dir, "--evaluation.interval", "0"]

    stages.start(f"dataset in {data_dir}")
    prepare_data(data_dir, args.seed, args.frames_per_scene)
    stages.end()

    stages.start("oracle: ground truth scored by the nuscenes-devkit")
    oracle = score_ground_truth(load_config(os.path.join(CONFIGS, "default.yaml"), ["--dataset_root", data_dir]))
    print(f"oracle: mAP {oracle['mAP']:.3f}  NDS {oracle['NDS']:.3f}")
    stages.end()

    teacher_ckpt = os.path.join(run_dir, "teacher", "latest.pth")
    epochs = {"teacher": args.teacher_epochs, "baseline": args.student_epochs, "simdistill": args.student_epochs}
    for name, config in MODELS:
        stages.start(f"training {name} ({epochs[name]} epochs)")
        extra = [] if name == "teacher" else ["--model.teacher_checkpoint", teacher_ckpt]
        run_tool(["train.py", os.path.join(CONFIGS, "det", config), "--run-dir", os.path.join(run_dir, name),
                  "--max_epochs", epochs[name], "--seed", args.seed] + common + extra)
        stages.end()

    stages.start("scoring the three models with the nuscenes-devkit")
    results = {}
    for name, config in MODELS:
        out = os.path.join(run_dir, name, "metrics_test.json")
        extra = [] if name == "teacher" else ["--model.teacher_checkpoint", teacher_ckpt]
        run_tool(["test.py", os.path.join(CONFIGS, "det", config), os.path.join(run_dir, name, "latest.pth"),
                  "--eval", "bbox", "--out", out, "--run-dir", os.path.join(run_dir, name, "test"),
                  "--dataset_root", data_dir] + extra)
        with open(out) as f:
            metrics = json.load(f)
        results[name] = {k.split("/", 1)[1] if k.startswith("object/") else k: v for k, v in metrics.items()}
    stages.end()

    stages.start("pictures of the SimDistill student's predictions")
    vis_dir = os.path.join(run_dir, "vis")
    run_tool(["visualize.py", os.path.join(CONFIGS, "det", "simdistill.yaml"),
              os.path.join(run_dir, "simdistill", "latest.pth"), "--samples", args.vis_samples, "--out-dir", vis_dir,
              "--dataset_root", data_dir, "--model.teacher_checkpoint", teacher_ckpt])
    stages.end()

    summary = {name: {"mAP": r["mAP"], "NDS": r["NDS"]} for name, r in results.items()}
    summary["oracle"] = {"mAP": oracle["mAP"], "NDS": oracle["NDS"]}
    batch_size = int(load_config(os.path.join(CONFIGS, "default.yaml"))["data"]["samples_per_gpu"])
    scale = scale_of(data_dir, epochs, batch_size)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump({**summary, "scale": scale, "details": results}, f, indent=2)
    print("\n" + table(results))
    print("\n" + meaning(scale))
    print("\nwall time per stage: " + ", ".join(f"{k.split(' (')[0]} {v:.0f} s" for k, v in stages.times.items()))
    print(f"total {time.time() - start:.0f} s")
    print(f"results: {os.path.join(run_dir, 'results.json')}\npictures: {vis_dir}\n"
          f"checkpoints and logs: {run_dir}/{{teacher,baseline,simdistill}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
