"""Draws samples of a dataset split with ground-truth and predicted 3D boxes, one PNG per sample.

    python tools/visualize.py CONFIG CKPT [--split val|train] [--samples K] [--out-dir D] [--score-thr 0.3]
                              [--a.b value ...]

Each picture shows the six cameras (the network input, de-normalised; FRONT_LEFT FRONT FRONT_RIGHT above
BACK_LEFT BACK BACK_RIGHT) with the projected box edges, and a bird's-eye view: LiDAR points coloured by height,
ground truth in green, predictions coloured by class with a heading tick, the ego car, range rings. ``CKPT`` may be
``none`` to draw the ground truth only. The K samples are spread evenly over the split.
"""
import argparse
import os
import sys

import torch
from tqdm import tqdm

from mmdet3d.analysis.samples import split_config, spread_indices
from mmdet3d.utils.checkpoint import load_checkpoint
from mmdet3d.datasets.collate import to_device
from mmdet3d.utils.config import load_config


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("checkpoint", help="model checkpoint, or 'none' to draw the ground truth only")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="dataset of data.<split>")
    parser.add_argument("--samples", type=int, default=5, help="number of samples to draw (default 5)")
    parser.add_argument("--out-dir", "--out_dir", dest="out_dir", help="output folder (default runs/<config stem>/vis)")
    parser.add_argument("--score-thr", "--score_thr", dest="score_thr", type=float, default=0.3,
                        help="draw predictions with at least this score (default 0.3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default: cuda if available)")
    return parser.parse_known_args(argv)


def find_transform(cfg, name):
    """The first transform config of type ``name`` anywhere in ``cfg`` (a dataset config, wrappers included)."""
    if isinstance(cfg, dict):
        if cfg.get("type") == name:
            return cfg
        children = cfg.values()
    elif isinstance(cfg, (list, tuple)):
        children = cfg
    else:
        return None
    for child in children:
        found = find_transform(child, name)
        if found is not None:
            return found
    return None


def build_model(cfg, checkpoint, device):
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.registry import MODELS

    if "model" not in cfg:
        raise ValueError("config has no 'model' section")
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def fail(error):
    print(f"visualize.py: error: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    args, overrides = parse_args(argv)
    import mmdet3d.datasets  # noqa: F401  (registers the datasets and transforms)
    from mmdet3d.datasets import collate
    from mmdet3d.registry import DATASETS
    from mmdet3d.analysis.visualization import render_sample, sample_view, save_figure

    try:
        cfg = load_config(args.config, overrides)
        dataset_cfg = split_config(cfg, args.split)
        normalize = find_transform(dataset_cfg.to_dict() if hasattr(dataset_cfg, "to_dict") else dataset_cfg,
                                   "ImageNormalize")
        if normalize is None:
            raise ValueError(f"data.{args.split}.pipeline: no ImageNormalize step, so the images cannot be shown")
        point_cloud_range = cfg.get("point_cloud_range")
        if point_cloud_range is None or len(point_cloud_range) != 6:
            raise ValueError(f"point_cloud_range must hold 6 values, got {point_cloud_range!r}")
        dataset = DATASETS.build(dataset_cfg)
        indices = spread_indices(len(dataset), args.samples)
        device = resolve_device(args.device)
        model = None if args.checkpoint.lower() == "none" else build_model(cfg, args.checkpoint, device)
    except (ValueError, FileNotFoundError) as e:
        return fail(e)

    stem = os.path.splitext(os.path.basename(args.config))[0]
    out_dir = args.out_dir or os.path.join("runs", stem, "vis")
    os.makedirs(out_dir, exist_ok=True)
    class_names = list(cfg.get("object_classes") or [])
    written = []
    for index in tqdm(indices, desc=f"drawing {args.split} samples", unit="sample"):
        batch = collate([dataset[index]])
        prediction = None
        if model is not None:
            with torch.no_grad():
                prediction = model(mode="predict", **to_device(batch, device))[0]
        view = sample_view(batch, 0, normalize["mean"], normalize["std"], prediction)
        path = os.path.join(out_dir, f"{index:05d}_{view.token}.png")
        save_figure(render_sample(view, class_names, point_cloud_range, args.score_thr), path)
        written.append(path)
    print(f"wrote {len(written)} images to {os.path.abspath(out_dir)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
