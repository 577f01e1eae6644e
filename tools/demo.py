"""The end-to-end demo on generated data: generate a nuScenes-format dataset, build its info files and score the
ground truth with the official devkit (the oracle must reach mAP = NDS = 1.000).

    python tools/demo.py [--data-dir data/synthetic] [--run-dir runs/demo]
"""
import argparse
import json
import os
import sys
import time

from mmdet3d.datasets.nuscenes_converter import create_nuscenes_infos
from mmdet3d.datasets.synthetic import generate
from mmdet3d.evaluation import score_ground_truth
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_CONFIG = os.path.join(REPO, "configs", "synthetic", "default.yaml")
VERSION = "v1.0-mini"


def stage(title):
    print(f"\n== {title} ==", flush=True)
    return time.time()


def prepare_data(data_dir, seed):
    start = stage(f"1/2 generating the demo dataset in {data_dir}")
    tables = os.path.join(data_dir, VERSION)
    if os.path.isfile(os.path.join(tables, "sample.json")) and os.path.isfile(
            os.path.join(data_dir, "nuscenes_infos_val.pkl")):
        print("already there: reusing it (delete the folder to regenerate)")
    else:
        summary = generate(data_dir, version=VERSION, seed=seed)
        print(f"generated: {summary}")
        create_nuscenes_infos(data_dir, VERSION, max_sweeps=10)
    return time.time() - start


def score_oracle(data_dir, run_dir):
    start = stage("2/2 scoring the ground truth with the nuscenes-devkit (oracle)")
    cfg = load_config(DATA_CONFIG, ["--dataset_root", data_dir.rstrip("/") + "/"])
    metrics = score_ground_truth(cfg)
    print(f"oracle: mAP {metrics['mAP']:.3f}  NDS {metrics['NDS']:.3f}")
    return metrics, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.run_dir, exist_ok=True)
    total = time.time()
    data_time = prepare_data(args.data_dir, args.seed)
    oracle, oracle_time = score_oracle(args.data_dir, args.run_dir)
    results = {"oracle": {"mAP": oracle["mAP"], "NDS": oracle["NDS"]}}
    with open(os.path.join(args.run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\ndata {data_time:.0f} s, oracle {oracle_time:.0f} s, total {time.time() - total:.0f} s")
    print(f"results: {os.path.join(args.run_dir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
