"""Generates a small dataset in nuScenes' on-disk format (13 tables, camera JPEGs, LiDAR key frames and sweeps).

    python tools/create_synthetic_nuscenes.py --out-dir data/synthetic [--version v1.0-mini] [--seed 0]
        [--scenes 10] [--frames-per-scene 10] [--image-size 180 320] [--sweeps 2] [--workers 2] [--overwrite]

Ten scenes of a *-mini version take the v1.0-mini scene names (the devkit's mini_train / mini_val splits); any other
count writes <out-dir>/<version>/splits.json.
"""
import argparse
import os
import sys

from mmdet3d.datasets.synthetic.generate import DEFAULT_FRAMES, DEFAULT_IMAGE_SIZE, DEFAULT_SWEEPS, generate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="dataset root to write (samples/, sweeps/, maps/, <version>/)")
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--frames-per-scene", type=int, default=DEFAULT_FRAMES, help="key frames (2 Hz) per scene")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"))
    parser.add_argument("--sweeps", type=int, default=DEFAULT_SWEEPS, help="20 Hz LiDAR sweeps before each key frame")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out-dir")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out_dir, version=args.version, seed=args.seed, scenes=args.scenes,
                           frames_per_scene=args.frames_per_scene, image_size=tuple(args.image_size),
                           sweeps=args.sweeps, workers=args.workers, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"create_synthetic_nuscenes.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['samples']} samples ({summary['sweeps']} sweeps), {summary['boxes']} boxes, "
          f"{summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s -> {os.path.abspath(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
