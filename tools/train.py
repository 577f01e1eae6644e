"""Trains a model described by a YAML config.

    python tools/train.py CONFIG [--run-dir D] [--load_from CKPT] [--resume] [--a.b value ...]
    torchrun --nproc_per_node N tools/train.py CONFIG ...
    torchpack dist-run -np N python tools/train.py CONFIG ...

``--a.b value`` overrides any config key (YAML-typed). The run directory (default ``runs/<config stem>``) receives
the resolved config, logs, TensorBoard events, ``epoch_N.pth`` + ``latest.pth`` and ``metrics_epoch_N.json``.
``--resume`` continues from ``<run dir>/latest.pth`` (``resume_from`` names another checkpoint); ``--load_from``
starts from another checkpoint's weights (keys that match).
"""
import argparse
import os
import sys

from mmdet3d.apis import build_train_runner, init_distributed, shutdown_distributed
from mmdet3d.apis.errors import INPUT_ERRORS, report_input_error
from mmdet3d.apis.runner import RunFinished
from mmdet3d.utils.config import load_config


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("--run-dir", "--run_dir", dest="run_dir", help="output folder (default runs/<config stem>)")
    parser.add_argument("--load_from", "--load-from", dest="load_from", help="checkpoint whose weights start the run")
    parser.add_argument("--resume", action="store_true", help="continue from <run dir>/latest.pth if it exists")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad-input error")
    return parser.parse_known_args(argv)


def load_train_config(args, overrides):
    cfg = load_config(args.config, overrides)
    if args.load_from:
        cfg["load_from"] = args.load_from
    return cfg


def default_run_dir(config_path):
    return os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])


def fail(error):
    print(f"train.py: error: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    args, overrides = parse_args(argv)
    init_distributed()
    run_dir = args.run_dir or default_run_dir(args.config)
    try:
        # Bad input (config, paths, checkpoints, data) is reported in one line; anything else keeps its traceback.
        try:
            cfg = load_train_config(args, overrides)
            runner = build_train_runner(cfg, run_dir, resume=args.resume)
            runner.train()
        except RunFinished as e:
            print(f"train.py: {e}")
        except INPUT_ERRORS as e:
            if args.debug:
                raise
            return fail(report_input_error(e, run_dir))
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
