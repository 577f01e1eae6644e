"""Converts an official BEVFusion (mit-han-lab) or SimDistill checkpoint to this package's layout.

    python tools/convert_checkpoint.py IN.pth OUT.pth [--config CFG] [--verbose] [--unsafe-load]

Permutes spconv 1.x sparse kernels to spconv 2.x, remaps the CenterHead dim/rot output layers from the legacy box
convention to ours, renames the few keys that differ and drops grid constants (details:
``mmdet3d/utils/checkpoint_convert.py``). With ``--config`` the weights are matched to that config's model and must
load into it strictly before OUT is written; keys the model lacks are listed as unmatched. OUT is written
atomically. ``--unsafe-load`` reads IN with ``torch.load(weights_only=False)``: only for files you trust.
"""
import argparse
import sys

from mmdet3d.apis.checkpoint import CheckpointError
from mmdet3d.utils.checkpoint_convert import HEIGHT_NOTE, convert_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="IN", help="official checkpoint (.pth)")
    parser.add_argument("dst", metavar="OUT", help="converted checkpoint to write")
    parser.add_argument("--config", help="our YAML config: match the keys to its model and check a strict load")
    parser.add_argument("--verbose", action="store_true", help="list every converted, renamed, dropped and "
                                                               "unmatched key")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="load IN with weights_only=False (runs code pickled in the file; trusted files only)")
    return parser.parse_args(argv)


def summary(report, args):
    lines = [f"converted {args.src} -> {args.dst}: {len(report.sparse_converted)} sparse kernels permuted to "
             f"spconv 2.x, {len(report.box_layers)} CenterHead dim/rot layers remapped, {len(report.renamed)} keys "
             f"renamed, {len(report.dropped)} dropped on purpose"]
    if report.checked_against_model:
        more = " (--verbose lists them)" if report.unmatched and not args.verbose else ""
        lines.append(f"{len(report.unmatched)} keys match nothing in the model of {args.config} and were left "
                     f"out{more}; the rest loads strictly")
    else:
        lines.append("no --config: keys were not checked against a model")
    if args.verbose:
        sections = [("sparse kernel permuted", report.sparse_converted),
                    ("sparse kernel already 2.x, kept", report.sparse_kept),
                    ("sparse kernel fits both layouts, permuted", report.sparse_ambiguous),
                    ("box-code layer remapped", report.box_layers),
                    ("renamed", [f"{old} -> {new}" for old, new in report.renamed]),
                    ("dropped", [f"{key} ({why})" for key, why in report.dropped]),
                    ("unmatched", report.unmatched)]
        lines += [f"  {title}: {key}" for title, keys in sections for key in keys]
    lines.append(f"note: {HEIGHT_NOTE}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = convert_checkpoint(args.src, args.dst, config=args.config, unsafe_load=args.unsafe_load)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(report, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
