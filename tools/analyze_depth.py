"""How well a camera model predicts depth: its view transform's depth distributions scored against LiDAR.

    python tools/analyze_depth.py CONFIG CKPT [--samples 8] [--split val|train] [--json OUT] [--a.b value ...]

Runs on the CPU, in eval mode. For K samples of the split (spread evenly) the camera encoder (a SimDistill model's
student's) is run up to its view transform; on every feature cell that holds a LiDAR point the tool scores the
predicted depth distribution: the probability of the LiDAR's depth bin (and of the bins within one of it), and the
absolute error of the expected depth, next to a uniform distribution's. The data pipeline loads the LiDAR points
for this even when the model does not use them.
"""
import argparse
import json
import os
import sys

import torch
from tqdm import tqdm

from mmdet3d.analysis.depth_quality import bin_depths, depth_quality, predicted_depth
from mmdet3d.analysis.samples import build_split, spread_indices
from mmdet3d.datasets.collate import to_device
from mmdet3d.utils.config import load_config

ROWS = (("p_lidar_bin", "uniform_p_lidar_bin", "P(LiDAR bin)"),
        ("p_within_one_bin", "uniform_p_within_one_bin", "P(within one bin)"),
        ("expected_depth_mae_m", "uniform_expected_depth_mae_m", "|E[depth] - LiDAR| mean (m)"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config of a model with an LSS-style camera encoder")
    parser.add_argument("checkpoint", help="checkpoint of that model")
    parser.add_argument("--samples", type=int, default=8, help="samples to score (default 8)")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="dataset of data.<split>")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    return parser.parse_known_args(argv)


def fail(error):
    print(f"analyze_depth.py: error: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    args, overrides = parse_args(argv)
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.datasets import collate
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.checkpoint import load_checkpoint

    try:
        cfg = load_config(args.config, overrides)
        dataset = build_split(cfg, args.split)
        indices = spread_indices(len(dataset), args.samples)
        model = MODELS.build(cfg.model)
        load_checkpoint(model, args.checkpoint)
        model.eval()
        probs, targets = [], []
        for index in tqdm(indices, desc=f"scoring depth on {args.split} samples", unit="sample"):
            p, t = predicted_depth(model, to_device(collate([dataset[int(index)]]), "cpu"))
            probs.append(p)
            targets.append(t)
        result = depth_quality(torch.cat(probs), torch.cat(targets), bin_depths(model))
    except (ValueError, FileNotFoundError, KeyError) as e:
        return fail(e)
    result.update(config=args.config, checkpoint=args.checkpoint, split=args.split,
                  samples=[int(i) for i in indices])
    print(f"{result['cells']} feature cells with a LiDAR depth, {len(indices)} {args.split} samples")
    width = max(len(name) for *_, name in ROWS)
    print(f"{'':{width}}  {'model':>8}  {'uniform':>8}")
    for key, uniform_key, name in ROWS:
        print(f"{name:{width}}  {result[key]:8.3f}  {result[uniform_key]:8.3f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
