"""How a detector's headings fail: per class, the matched boxes whose yaw is right, flipped front/back, or off axis.

    python tools/analyze_heading.py CONFIG CKPT [--samples 12] [--split val|train] [--score-thr 0.3]
                                    [--max-distance 1.0] [--json OUT] [--a.b value ...]

For K samples of the split (spread evenly) the model predicts on the CPU; each ground-truth box is matched to the
nearest prediction of its class scoring at least ``--score-thr`` whose BEV centre is within ``--max-distance`` m.
Its absolute yaw error is "right" below 45 degrees, "flipped" within 45 degrees of the reverse heading, "off axis"
in between. Barriers and
traffic cones are left out, as the devkit's orientation error leaves them (barriers have period pi, cones none).
"""
import argparse
import json
import os
import sys

import torch
from tqdm import tqdm

from mmdet3d.analysis.heading import heading_errors, summarize_heading_errors
from mmdet3d.analysis.samples import build_split, spread_indices
from mmdet3d.datasets import collate
from mmdet3d.datasets.collate import to_device
from mmdet3d.utils.config import load_config

NO_HEADING = ("barrier", "traffic_cone")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config of a detector")
    parser.add_argument("checkpoint", help="checkpoint of that detector")
    parser.add_argument("--samples", type=int, default=12, help="samples to score (default 12)")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="dataset of data.<split>")
    parser.add_argument("--score-thr", "--score_thr", dest="score_thr", type=float, default=0.3)
    parser.add_argument("--max-distance", "--max_distance", dest="max_distance", type=float, default=1.0,
                        help="largest BEV centre distance of a match in metres (default 1.0)")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    return parser.parse_known_args(argv)


def fail(error):
    print(f"analyze_heading.py: error: {error}", file=sys.stderr)
    return 2


def as_array(boxes):
    boxes = boxes.tensor if hasattr(boxes, "tensor") else boxes
    return torch.as_tensor(boxes).detach().cpu().numpy()


def main(argv=None):
    args, overrides = parse_args(argv)
    import numpy as np

    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.checkpoint import load_checkpoint

    try:
        cfg = load_config(args.config, overrides)
        class_names = list(cfg["object_classes"])
        dataset = build_split(cfg, args.split)
        indices = spread_indices(len(dataset), args.samples)
        model = MODELS.build(cfg.model)
        load_checkpoint(model, args.checkpoint)
        model.eval()
        labels, errors = [], []
        for index in tqdm(indices, desc=f"predicting {args.split} samples", unit="sample"):
            batch = to_device(collate([dataset[int(index)]]), "cpu")
            with torch.no_grad():
                result = model(mode="predict", **batch)[0]
            keep = (result["scores_3d"] >= args.score_thr).cpu().numpy()
            gt_labels = np.asarray(batch["gt_labels_3d"][0])
            scored = ~np.isin(gt_labels, [class_names.index(c) for c in NO_HEADING if c in class_names])
            lab, err = heading_errors(as_array(result["boxes_3d"])[keep], result["labels_3d"].cpu().numpy()[keep],
                                      as_array(batch["gt_bboxes_3d"][0])[scored], gt_labels[scored],
                                      args.max_distance)
            labels.append(lab)
            errors.append(err)
        summary = summarize_heading_errors(np.concatenate(labels), np.concatenate(errors), class_names)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return fail(e)
    if not summary:
        return fail(f"no ground-truth box has a prediction above score {args.score_thr} within "
                    f"{args.max_distance} m")
    width = max(len(name) for name in summary)
    print(f"{'class':<{width}}  {'matched':>7}  {'right':>6}  {'flipped':>7}  {'off axis':>8}  {'mean rad':>8}")
    for name, s in summary.items():
        print(f"{name:<{width}}  {s['matched']:7d}  {s['right']:6.2f}  {s['flipped']:7.2f}  {s['off_axis']:8.2f}  "
              f"{s['mean_rad']:8.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "checkpoint": args.checkpoint, "split": args.split,
                       "samples": [int(i) for i in indices], "classes": summary}, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
