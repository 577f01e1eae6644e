"""How well a camera model predicts depth: its view transform's depth distributions scored against LiDAR.

    python tools/analyze_depth.py CONFIG CKPT|none [--samples 8] [--split val|train] [--json OUT]
                                  [--probe 0,2,4 [--probe-samples 60] [--probe-steps 300]] [--a.b value ...]

Runs on the CPU, in eval mode. For K samples of the split (spread evenly) the camera encoder (a SimDistill model's
student's) is run up to its view transform; on every feature cell that holds a LiDAR point the tool scores the
predicted depth distribution: the probability of the LiDAR's depth bin (and of the bins within one of it), and the
absolute error of the expected depth, next to a uniform distribution's. The data pipeline loads the LiDAR points
for this even when the model does not use them. ``none`` as CKPT scores the config's initialisation (e.g. its
pretrained backbone).

``--probe 0,2,4``: what the lifted image features can tell about depth at all. For each listed count of conv3x3
layers a depth net of the view transforms' layout (``make_depthnet``) is fitted to the LiDAR bins of the frozen
features of ``--probe-samples`` data.train samples (cross-entropy, AdamW 1e-3, batches of 32 images,
``--probe-steps`` steps) and scored as above on the train features and on the ``--samples`` of ``--split``. Direct
depth supervision of a probe only: the detector is not changed.
"""
import argparse
import json
import os
import sys

import torch
from tqdm import tqdm

from mmdet3d.analysis.depth_quality import (bin_depths, depth_quality, depth_vtransform, fit_depth_probe, lidar_bins,
                                            predicted_depth, probe_features)
from mmdet3d.analysis.samples import build_split, spread_indices
from mmdet3d.datasets import collate
from mmdet3d.datasets.collate import to_device
from mmdet3d.utils.config import load_config

ROWS = (("p_lidar_bin", "uniform_p_lidar_bin", "P(LiDAR bin)"),
        ("p_within_one_bin", "uniform_p_within_one_bin", "P(within one bin)"),
        ("expected_depth_mae_m", "uniform_expected_depth_mae_m", "|E[depth] - LiDAR| mean (m)"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config of a model with an LSS-style camera encoder")
    parser.add_argument("checkpoint", help="checkpoint of that model, or none for the config's initialisation")
    parser.add_argument("--samples", type=int, default=8, help="samples to score (default 8)")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="dataset of data.<split>")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    parser.add_argument("--probe", help="comma-separated conv3x3 counts of depth probes to fit (e.g. 0,2,4)")
    parser.add_argument("--probe-samples", type=int, default=60, help="data.train samples the probes fit on")
    parser.add_argument("--probe-steps", type=int, default=300, help="optimizer steps per probe")
    return parser.parse_known_args(argv)


def probe_counts(text):
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise ValueError(f"--probe {text!r}: expected comma-separated conv3x3 counts >= 0, e.g. 0,2,4")
    return counts


def features_and_bins(model, dataset, indices, desc):
    feats, bins = [], []
    for index in tqdm(indices, desc=desc, unit="sample"):
        batch = to_device(collate([dataset[int(index)]]), "cpu")
        bins.append(lidar_bins(model, batch))
        feats.append(probe_features(model, batch).flatten(0, 1))
    return torch.cat(feats), torch.cat(bins)


def run_probes(model, cfg, args, eval_dataset, eval_indices):
    """``{convs: {"train": scores, args.split: scores}}`` of the fitted probes."""
    counts = probe_counts(args.probe)
    train = build_split(cfg, "train")
    train_feats, train_bins = features_and_bins(model, train, spread_indices(len(train), args.probe_samples),
                                                "probe features (train)")
    eval_feats, eval_bins = features_and_bins(model, eval_dataset, eval_indices, f"probe features ({args.split})")
    bins = bin_depths(model)
    results = {}
    for convs in tqdm(counts, desc="fitting depth probes", unit="probe"):
        probe = fit_depth_probe(train_feats, train_bins, convs, steps=args.probe_steps)
        with torch.no_grad():
            results[convs] = {split: depth_quality(probe(f).softmax(1), t, bins) for split, f, t in
                              (("train", train_feats, train_bins), (args.split, eval_feats, eval_bins))}
    return results


def fail(error):
    print(f"analyze_depth.py: error: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    args, overrides = parse_args(argv)
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.checkpoint import load_checkpoint

    try:
        cfg = load_config(args.config, overrides)
        dataset = build_split(cfg, args.split)
        indices = spread_indices(len(dataset), args.samples)
        if args.probe:
            probe_counts(args.probe)
        model = MODELS.build(cfg.model)
        depth_vtransform(model)
        if args.checkpoint.lower() != "none":
            load_checkpoint(model, args.checkpoint)
        model.eval()
        probs, targets = [], []
        for index in tqdm(indices, desc=f"scoring depth on {args.split} samples", unit="sample"):
            p, t = predicted_depth(model, to_device(collate([dataset[int(index)]]), "cpu"))
            probs.append(p)
            targets.append(t)
        result = depth_quality(torch.cat(probs), torch.cat(targets), bin_depths(model))
        probes = run_probes(model, cfg, args, dataset, indices) if args.probe else None
    except (ValueError, FileNotFoundError, KeyError) as e:
        return fail(e)
    result.update(config=args.config, checkpoint=args.checkpoint, split=args.split,
                  samples=[int(i) for i in indices])
    print(f"{result['cells']} feature cells with a LiDAR depth, {len(indices)} {args.split} samples")
    width = max(len(name) for *_, name in ROWS)
    print(f"{'':{width}}  {'model':>8}  {'uniform':>8}")
    for key, uniform_key, name in ROWS:
        print(f"{name:{width}}  {result[key]:8.3f}  {result[uniform_key]:8.3f}")
    if probes:
        result["probes"] = {str(convs): scores for convs, scores in probes.items()}
        print(f"\ndepth probes fitted on {args.probe_samples} train samples, {args.probe_steps} steps "
              f"(P(LiDAR bin) / |E[depth] - LiDAR| mean in m):")
        for convs, scores in probes.items():
            print(f"  {convs} conv3x3 + 1x1: " + "  ".join(
                f"{split} {s['p_lidar_bin']:.3f} / {s['expected_depth_mae_m']:.2f}" for split, s in scores.items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
