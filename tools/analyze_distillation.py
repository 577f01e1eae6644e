"""What each SimDistill loss does to the student, and whether teacher and student BEV grids line up.

    python tools/analyze_distillation.py CONFIG CKPT [--samples 8] [--split train|val] [--balance FRACTION]
                                         [--balance-module M] [--json OUT] [--a.b value ...]

Runs on the CPU. CKPT is a SimDistill checkpoint (teacher and student weights) or ``none`` for the config's initial
weights (teacher from ``model.teacher_checkpoint``). Over K samples of the split (one per batch, spread evenly), prints
1. each loss group's mean value and the L2 norm of its gradient on each student module (training mode, as in a
   training step; the weights are not changed);
2. the student's GT heatmap and box losses in eval mode (comparable between SimDistill and the baseline, which is the
   same model with every distillation flag off);
3. for every BEV map of teacher and student (in training mode, as the distillation losses see them), the correlation
   of its per-cell feature norm with the GT object mask under the eight symmetries of the grid; a map is aligned with
   the head's targets when the identity has the largest magnitude (a negative correlation still marks object cells:
   their features are weaker, not elsewhere).

With ``--balance FRACTION`` (training split only: loss weights are never set on validation data) it also prints,
per distillation loss, its gradient norm on ``--balance-module`` (default the student's camera backbone) relative to
the detection loss's and the weight that would make that ratio FRACTION (a weight scales its loss's gradient
linearly, so one measurement per checkpoint suffices). The ratios move during training: the feature losses' grow by
~50-100x over the first 800 iterations, as the detection gradient shrinks. ``configs/synthetic/det/simdistill.yaml``'s
weights were set with FRACTION about 1/3 on a trained student; the experiment spec's ``balanced_at_init`` arm uses the
weights measured at the start (CKPT ``none``). See README, "Loss weights".
"""
import argparse
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from mmdet3d.datasets.collate import to_device
from mmdet3d.analysis import distill_analysis
from mmdet3d.analysis.samples import build_split, spread_indices
from mmdet3d.utils.config import load_config


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="SimDistill YAML config")
    parser.add_argument("checkpoint", help="SimDistill checkpoint, or 'none' for the initial weights")
    parser.add_argument("--samples", type=int, default=8, help="samples to average over (default 8)")
    parser.add_argument("--split", choices=("train", "val"), default="train", help="dataset of data.<split>")
    parser.add_argument("--balance", type=float, metavar="FRACTION",
                        help="print the weights that bring each distillation gradient to FRACTION of the detection "
                             "loss's (needs --split train)")
    parser.add_argument("--balance-module", "--balance_module", dest="balance_module",
                        default="encoders_student.camera.backbone", help="student module the gradients are compared "
                                                                         "on (default the camera backbone)")
    parser.add_argument("--json", help="write every number to this JSON file")
    return parser.parse_known_args(argv)


def build_model(cfg, checkpoint):
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.utils.checkpoint import load_checkpoint
    from mmdet3d.registry import MODELS

    model = MODELS.build(cfg.model)
    if checkpoint.lower() != "none":
        load_checkpoint(model, checkpoint)
    return model.train()


def mean_reports(reports):
    groups = reports[0].keys()
    return {g: {"value": float(np.mean([r[g]["value"] for r in reports])),
                "grad_norm": {m: float(np.mean([r[g]["grad_norm"][m] for r in reports]))
                              for m in reports[0][g]["grad_norm"]}} for g in groups}


def mean_alignment(alignments):
    return {name: {s: float(np.mean([a[name][s] for a in alignments])) for s in alignments[0][name]}
            for name in alignments[0]}


def short(module):
    return module.replace("encoders_student.camera.", "cam.").replace("_student", "")


def format_table(title, headers, rows):
    """A titled table whose columns are as wide as their longest entry and at least two spaces apart (the first
    left-aligned, the others right-aligned), so that no header runs into the next."""
    cells = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    header = line(cells[0])
    return "\n".join([title, header, "-" * len(header)] + [line(r) for r in cells[1:]])


def format_gradients(report):
    modules = list(next(iter(report.values()))["grad_norm"])
    rows = [[group, f"{row['value']:.4f}"] + [f"{row['grad_norm'][m]:.4g}" for m in modules]
            for group, row in report.items()]
    return format_table("mean loss value and gradient L2 norm on each student module",
                        ["loss group", "value"] + [short(m) for m in modules], rows)


def format_alignment(alignment):
    symmetries = list(distill_analysis.GRID_SYMMETRIES)
    rows = [[name] + [f"{row[s]:.3f}" for s in symmetries] + [distill_analysis.best_symmetry(row)]
            for name, row in alignment.items()]
    return format_table("correlation of per-cell feature norm with the GT object mask, by grid symmetry "
                        "(best: largest magnitude)", ["BEV map"] + symmetries + ["best"], rows)


def format_balance(balance, fraction, module):
    rows = [[group, f"{row['weight']:.4g}", f"{row['ratio']:.4g}",
             "-" if row["balanced"] is None else f"{row['balanced']:.4g}"] for group, row in balance.items()]
    return format_table(f"weights that bring each distillation gradient on {short(module)} to {fraction:g} of the "
                        "detection loss's", ["loss group", "weight now", "grad / detection grad", "balanced weight"],
                        rows)


def fail(error):
    print(f"analyze_distillation.py: error: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    args, overrides = parse_args(argv)
    from mmdet3d.datasets import collate

    try:
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        if args.balance is not None and (args.split != "train" or not args.balance > 0):
            raise ValueError("--balance needs a positive FRACTION and --split train (loss weights are never set on "
                             "validation data)")
        cfg = load_config(args.config, overrides)
        if (cfg.get("model") or {}).get("type") != "SimDistill":
            raise ValueError(f"{args.config}: model.type is {(cfg.get('model') or {}).get('type')!r}; this tool "
                             "analyses SimDistill models")
        dataset = build_split(cfg, args.split)
        indices = spread_indices(len(dataset), args.samples)
        model = build_model(cfg, args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        return fail(e)

    reports, alignments, detection = [], [], []
    head = model.heads_student["object"]
    for index in tqdm(indices, desc=f"analysing {args.split} samples", unit="sample"):
        batch = to_device(collate([dataset[int(index)]]), "cpu")
        reports.append(distill_analysis.loss_gradient_norms(model, batch))
        detection.append(distill_analysis.student_detection_loss(model, batch))
        mask = head.object_mask(batch["gt_bboxes_3d"], batch["gt_labels_3d"])
        alignments.append(distill_analysis.bev_alignment(distill_analysis.student_and_teacher_maps(model, batch),
                                                         mask))
    result = {"config": args.config, "checkpoint": args.checkpoint, "split": args.split,
              "samples": [int(i) for i in indices], "losses": mean_reports(reports),
              "student_detection_loss": {k: float(np.mean([d[k] for d in detection])) for k in detection[0]},
              "alignment": mean_alignment(alignments)}
    print(format_gradients(result["losses"]))
    det = result["student_detection_loss"]
    print(f"\nstudent GT loss in eval mode: heatmap {det['heatmap']:.4f}, bbox {det['bbox']:.4f}\n")
    print(format_alignment(result["alignment"]))
    if args.balance is not None:
        try:
            balance = distill_analysis.balanced_weights(result["losses"], model.weights, args.balance,
                                                        args.balance_module)
        except ValueError as e:
            return fail(e)
        result["balance"] = {"fraction": args.balance, "module": args.balance_module, "groups": balance}
        print("\n" + format_balance(balance, args.balance, args.balance_module))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
