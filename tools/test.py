"""Evaluates a checkpoint on the config's test split.

    python tools/test.py CONFIG CKPT --eval bbox [--out FILE] [--run-dir D] [--a.b value ...]
    torchrun --nproc_per_node N tools/test.py CONFIG CKPT --eval bbox
    torchpack dist-run -np N python tools/test.py CONFIG CKPT --eval bbox
    python tools/test.py CONFIG CKPT --onnx FILE.onnx --eval bbox

Each process runs its share of ``data.test``; the predictions are gathered to rank 0 in dataset order and scored
there with the config's ``evaluator`` (the nuscenes-devkit for nuScenes configs). Prints the metrics table; writes
them as JSON to ``--out``. Logs go to ``--run-dir`` (default ``runs/<config stem>/test``). With ``--onnx`` the
exported graph of ``tools/export_onnx.py`` runs in onnxruntime (CPU) instead of the PyTorch model, with the same
data, post-processing and metric; ``CKPT`` must be the checkpoint the file was exported from.
"""
import argparse
import os
import sys

from mmdet3d.apis import build_test_runner, init_distributed, shutdown_distributed
from mmdet3d.apis.distributed import get_rank
from mmdet3d.apis.errors import INPUT_ERRORS, report_input_error
from mmdet3d.apis.hooks import write_metrics_json
from mmdet3d.utils.config import load_config

EVAL_CHOICES = ("bbox",)


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("checkpoint", help="checkpoint to evaluate (e.g. runs/<name>/latest.pth)")
    parser.add_argument("--eval", choices=EVAL_CHOICES, default="bbox", help="metric family (3D boxes)")
    parser.add_argument("--out", help="write the metrics to this JSON file")
    parser.add_argument("--run-dir", "--run_dir", dest="run_dir", help="log folder (default runs/<config stem>/test)")
    parser.add_argument("--onnx", help="evaluate this file of tools/export_onnx.py with onnxruntime")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad-input error")
    return parser.parse_known_args(argv)


def format_metrics(metrics):
    """Two aligned columns, one metric per line."""
    if not metrics:
        return "(no metrics)"
    width = max(len(name) for name in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def fail(error):
    print(f"test.py: error: {error}", file=sys.stderr)
    return 2


def onnx_model(cfg, args):
    """The ``--onnx`` file behind the model interface, or None for the PyTorch model of the checkpoint."""
    if not args.onnx:
        return None
    from mmdet3d.deploy import OnnxDetector
    from mmdet3d.deploy.calibration import build_head

    return OnnxDetector(args.onnx, build_head(cfg), checkpoint=args.checkpoint)


def main(argv=None):
    args, overrides = parse_args(argv)
    init_distributed()
    stem = os.path.splitext(os.path.basename(args.config))[0]
    run_dir = args.run_dir or os.path.join("runs", stem, "test")
    try:
        try:
            cfg = load_config(args.config, overrides)
            runner = build_test_runner(cfg, args.checkpoint, run_dir, model=onnx_model(cfg, args))
            metrics = runner.test()
        except INPUT_ERRORS as e:
            if args.debug:
                raise
            return fail(report_input_error(e, run_dir))
        if get_rank() == 0:
            print(format_metrics(metrics), flush=True)
            if args.out:
                write_metrics_json(metrics, args.out)
                print(f"metrics written to {args.out}", flush=True)
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
