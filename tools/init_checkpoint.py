"""Writes a model's initial (untrained) weights as a checkpoint, for exports and benchmarks that need a file.

    python tools/init_checkpoint.py CONFIG --out FILE.pth [--seed 0] [--a.b value ...]

The model is built from CONFIG under ``torch.manual_seed(SEED)``, as ``tools/benchmark.py`` does without a checkpoint,
so the same seed gives the same weights. Latency does not depend on trained weights (apart from how many boxes reach
NMS), so the paper-size models can be exported and timed (``tools/export_onnx.py``, ``tools/benchmark.py --onnx``)
without training them on this machine. The file is written atomically, with ``meta`` saying it is untrained.
"""
import argparse
import io
import os
import sys

import torch

from mmdet3d.apis.errors import INPUT_ERRORS, one_line
from mmdet3d.utils.config import load_config


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("--out", required=True, help="checkpoint file to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed the model is built under (default 0)")
    return parser.parse_known_args(argv)


def main(argv=None):
    args, overrides = parse_args(argv)
    try:
        import mmdet3d.models  # noqa: F401  (registers the models)
        from mmdet3d.registry import MODELS
        from mmdet3d.utils.checkpoint import atomic_write_bytes

        cfg = load_config(args.config, overrides)
        if "model" not in cfg:
            raise ValueError(f"{args.config}: config has no 'model' section")
        torch.manual_seed(args.seed)
        model = MODELS.build(cfg.model)
        state = model.state_dict()
        buffer = io.BytesIO()
        torch.save({"state_dict": state, "meta": {"untrained": True, "seed": args.seed, "config": args.config}},
                   buffer)
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_bytes(buffer.getvalue(), args.out)
    except INPUT_ERRORS as e:
        print(f"init_checkpoint.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    params = sum(v.numel() for v in state.values() if v.is_floating_point())
    print(f"wrote {args.out}: {type(model).__name__} initialised under seed {args.seed}, {len(state)} tensors, "
          f"{params / 1e6:.2f} M floating-point values (untrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
