"""Builds the info files of a nuScenes-format dataset (real or generated).

    python tools/create_data.py nuscenes --root-path data/nuscenes --version v1.0-trainval [--max-sweeps 10]
"""
import argparse
import os
import sys
import time

from mmdet3d.datasets.nuscenes_converter import create_nuscenes_infos


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["nuscenes"], help="dataset format")
    parser.add_argument("--root-path", required=True, help="dataset root holding samples/, sweeps/ and v1.0-*/")
    parser.add_argument("--version", default="v1.0-trainval", help="v1.0-trainval, v1.0-mini or v1.0-test")
    parser.add_argument("--max-sweeps", type=int, default=10, help="previous LiDAR sweeps stored per key frame")
    parser.add_argument("--out-dir", default=None, help="where the .pkl files go (default: the root path)")
    parser.add_argument("--extra-tag", default="nuscenes", help="file name prefix of the info files")
    args = parser.parse_args(argv)
    if args.max_sweeps < 0:
        parser.error("--max-sweeps must be >= 0")
    start = time.time()
    try:
        written = create_nuscenes_infos(args.root_path, args.version, args.out_dir, args.max_sweeps, args.extra_tag)
    except (FileNotFoundError, ValueError) as e:
        print(f"create_data.py: error: {e}", file=sys.stderr)
        return 1
    for split, (path, count) in written.items():
        print(f"{split}: {count} samples -> {os.path.relpath(path)}")
    print(f"done in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
