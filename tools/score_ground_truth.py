"""Scores the ground truth of a split as if it were a detector's output (the "oracle").

A sanity check of the whole data path: generated or real data -> info files -> our box conventions -> devkit. Exact
ground truth must score mAP = NDS = 1.000; ``--jitter`` perturbs centres to show that the score reacts.

    python tools/score_ground_truth.py configs/synthetic/default.yaml [--jitter 0.5] [--a.b value ...]
"""
import argparse
import json
import sys

from mmdet3d.evaluation import score_ground_truth
from mmdet3d.utils.config import load_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--jitter", type=float, default=0.0, help="std of a Gaussian centre offset in metres")
    parser.add_argument("--out", help="write the metrics as JSON here")
    args, rest = parser.parse_known_args(argv)
    metrics = score_ground_truth(load_config(args.config, rest), args.jitter)
    print(f"mAP {metrics['mAP']:.3f}  NDS {metrics['NDS']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
