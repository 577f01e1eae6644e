"""Pretrains a config's camera backbone on generated images with a 2D-only task (per-pixel classes; never depth)
and writes its weights in mmdet's layout, for ``init_cfg: {type: Pretrained, checkpoint: PATH}``.

    python tools/pretrain_backbone.py CONFIG [--out data/pretrained/resnet18_synthetic_seg.pth] [--iters 1500]
        [--scenes 60] [--frames-per-scene 5] [--batch 12] [--lr 2e-3] [--seed 0] [--a.b value ...]

The images come from their own random scenes (never those of a generated dataset), at the config's
``source_image_size``, resized and cropped to its ``image_size`` as the test pipeline does.
"""
import argparse
import os
import sys

from mmdet3d.apis.pretrain import pretrain_backbone
from mmdet3d.utils.config import load_config

DEFAULT_OUT = os.path.join("data", "pretrained", "resnet18_synthetic_seg.pth")


def camera_backbone_config(cfg):
    """(backbone config without its init_cfg, channels of the levels it returns to the neck)."""
    try:
        camera = cfg["model"]["encoders"]["camera"]
        backbone = {k: v for k, v in dict(camera["backbone"]).items() if k not in ("init_cfg", "pretrained")}
        channels = list(camera["neck"]["in_channels"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{cfg.filename}: model.encoders.camera.backbone and .neck.in_channels are required ({e})")
    return backbone, channels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"checkpoint to write (default {DEFAULT_OUT})")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--scenes", type=int, default=60, help="random scenes rendered for training")
    parser.add_argument("--frames-per-scene", type=int, default=5)
    parser.add_argument("--batch", type=int, default=12, help="images per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        backbone, channels = camera_backbone_config(cfg)
        pretrain_backbone(backbone, channels, args.out, tuple(cfg["image_size"]), tuple(cfg["source_image_size"]),
                          iters=args.iters, batch=args.batch, lr=args.lr, scenes=args.scenes,
                          frames_per_scene=args.frames_per_scene, seed=args.seed)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"pretrain_backbone.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
