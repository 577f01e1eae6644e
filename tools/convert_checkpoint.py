"""Converts an official BEVFusion (mit-han-lab) or SimDistill checkpoint to this package's layout.

    python tools/convert_checkpoint.py IN.pth OUT.pth [--config CFG [--a.b value ...]] [--partial] [--verbose]
        [--unsafe-load]

Permutes spconv 1.x sparse kernels to spconv 2.x, remaps the CenterHead dim/rot output layers from the legacy box
convention to ours, renames the few keys that differ and drops grid constants and the released SimDistill's modules
this model does not have, each with its reason (details: ``mmdet3d/apis/checkpoint_convert.py``). With ``--config``
(and overrides of its keys, e.g. ``--model.official true`` for a released SimDistill checkpoint) the weights are
matched to that config's model and must load into it strictly before OUT is written; keys the model lacks are listed
as unmatched. ``--partial`` lets the model's keys that IN lacks stay at their initialisation (listed): MIT's
``bevfusion-det.pth`` or ``lidar-only-det.pth`` (SECOND decoder, TransFusion head) then warm-start our CenterHead
teacher or LiDAR-only model with ``tools/train.py CFG --load_from OUT``. OUT is written atomically.
``--unsafe-load`` reads IN with ``torch.load(weights_only=False)``: only for files you trust.
"""
import argparse
import sys

from mmdet3d.utils.checkpoint import CheckpointError
from mmdet3d.apis.checkpoint_convert import HEIGHT_NOTE, convert_checkpoint, group_keys
from mmdet3d.utils.config import ConfigError


def parse_args(argv=None):
    """``(args, overrides)``: the tool's options and the remaining ``--a.b value`` config overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("src", metavar="IN", help="official checkpoint (.pth)")
    parser.add_argument("dst", metavar="OUT", help="converted checkpoint to write")
    parser.add_argument("--config", help="our YAML config: match the keys to its model and check a strict load")
    parser.add_argument("--partial", action="store_true",
                        help="with --config: the model's keys IN lacks stay at their initialisation (listed)")
    parser.add_argument("--verbose", action="store_true", help="list every converted, renamed, dropped, unmatched "
                                                               "and left-at-initialisation key")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="load IN with weights_only=False (runs code pickled in the file; trusted files only)")
    return parser.parse_known_args(argv)


def summary(report, args):
    lines = [f"converted {args.src} -> {args.dst}: {len(report.sparse_converted)} sparse kernels permuted to "
             f"spconv 2.x, {len(report.box_layers)} CenterHead dim/rot layers remapped, {len(report.renamed)} keys "
             f"renamed, {len(report.dropped)} dropped on purpose"]
    lines += [f"  dropped {len(keys)}: {reason}" for reason, keys in report.dropped_by_reason()]
    if report.checked_against_model:
        more = " (--verbose lists them)" if report.unmatched and not args.verbose else ""
        groups = f": {', '.join(group_keys(report.unmatched))}" if report.unmatched else ""
        fit = "loads into it" if report.partial else "the rest loads strictly"
        lines.append(f"{len(report.unmatched)} keys match nothing in the model of {args.config} and were left "
                     f"out{groups}{more}; {fit}")
    else:
        lines.append("no --config: keys were not checked against a model")
    if report.partial:
        groups = ", ".join(group_keys(report.left_at_init)) or "none"
        lines.append(f"partial: {len(report.left_at_init)} keys of the model are not in {args.src} and stay at their "
                     f"initialisation: {groups}; start a run from it with tools/train.py {args.config} --load_from "
                     f"{args.dst}")
    if args.verbose:
        sections = [("sparse kernel permuted", report.sparse_converted),
                    ("sparse kernel already 2.x, kept", report.sparse_kept),
                    ("sparse kernel fits both layouts, permuted", report.sparse_ambiguous),
                    ("box-code layer remapped", report.box_layers),
                    ("renamed", [f"{old} -> {new}" for old, new in report.renamed]),
                    ("dropped", [f"{key} ({why})" for key, why in report.dropped]),
                    ("unmatched", report.unmatched),
                    ("left at initialisation", report.left_at_init if report.partial else [])]
        lines += [f"  {title}: {key}" for title, keys in sections for key in keys]
    lines.append(f"note: {HEIGHT_NOTE}")
    return "\n".join(lines)


def main(argv=None):
    args, overrides = parse_args(argv)
    try:
        report = convert_checkpoint(args.src, args.dst, config=args.config, unsafe_load=args.unsafe_load,
                                    partial=args.partial, overrides=overrides)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(report, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
