"""Exports a camera-only detector to ONNX: images [1, 6, 3, H, W] -> the CenterHead's raw per-task maps.

    python tools/export_onnx.py CONFIG CKPT --out FILE.onnx [--opset N] [--calibration SAMPLE_TOKEN]
                                [--dynamic-calibration] [--a.b value ...]

Exportable: the SimDistill student (the teacher is not exported), its no-distillation baseline and the camera-only
BEVFusion-C. The camera rig is fixed: the frustum -> BEV cell plan is computed from the camera matrices of one sample
(``--calibration``, default the first sample of ``data.test``, else ``data.val``) and stored in the graph as constant
index tensors. With ``--dynamic-calibration`` the rig is three more inputs instead, ``img_aug_inverse``,
``pixel_to_lidar`` and ``pixel_to_ego`` ([1, 6, 4, 4], ``mmdet3d.deploy.rig_inputs`` of a sample's matrices), and the
cells are computed in the graph: one file for any rig, at the cost of pooling the whole depth x feature tensor; the
``--calibration`` sample is then only the one checked. The tool checks the graph with ``onnx.checker``, prints its
opset, inputs, outputs and size, and runs onnxruntime (CPU) against PyTorch on that sample; it fails when an output
differs by more than ``--tolerance`` relative to the output's largest magnitude. Evaluate the file with
``tools/test.py CONFIG CKPT --onnx FILE.onnx``.
"""
import argparse
import os
import sys

import torch

from mmdet3d.apis.errors import INPUT_ERRORS, one_line
from mmdet3d.utils.config import load_config

DEFAULT_OPSET = 18


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("checkpoint", help="checkpoint of the model (e.g. runs/<name>/latest.pth)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--calibration", help="token of the sample whose camera rig is baked into the graph "
                                              "(default: the first sample of data.test)")
    parser.add_argument("--dynamic-calibration", "--dynamic_calibration", dest="dynamic", action="store_true",
                        help="take the camera rig as graph inputs instead of baking it in")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted relative difference onnxruntime vs PyTorch (default 1e-4)")
    return parser.parse_known_args(argv)


def fail(error):
    print(f"export_onnx.py: error: {error}", file=sys.stderr)
    return 2


def shape_of(value_info):
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def describe(model, path):
    import onnx

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    lines = [f"wrote {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB), opset {opset}, onnx.checker: ok"]
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            lines.append(f"  {kind:<6} {v.name:<16} {shape_of(v)} {dtype}")
    return "\n".join(lines)


def main(argv=None):
    args, overrides = parse_args(argv)
    try:
        import onnxruntime
    except ImportError as e:
        return fail(f"{e.name} is not installed (pip install -e '.[deploy]')")
    try:
        import mmdet3d.models  # noqa: F401  (registers the models)
        from mmdet3d.deploy import RIG_KEYS, CameraOnlyDetector, compare_outputs, export_onnx, rig_inputs
        from mmdet3d.deploy.export import exported_camera_encoder
        from mmdet3d.deploy.calibration import calibration_batch
        from mmdet3d.deploy.export import HEAD_MAPS, INPUT_NAME
        from mmdet3d.registry import MODELS
        from mmdet3d.utils.checkpoint import load_checkpoint

        cfg = load_config(args.config, overrides)
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
        if "model" not in cfg:
            raise ValueError("config has no 'model' section")
        model = MODELS.build(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model).eval()
        exported_camera_encoder(model)
        load_checkpoint(model, args.checkpoint)
        batch, split = calibration_batch(cfg, args.calibration)
        token = batch["metas"][0]["token"]
        rig = None if args.dynamic else {k: batch[k] for k in RIG_KEYS}
        detector = CameraOnlyDetector(model, rig)
        inputs = rig_inputs(batch) if args.dynamic else {}
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        onnx_model = export_onnx(detector, batch["img"], rig, args.out, args.opset, checkpoint=args.checkpoint,
                                 inputs=tuple(inputs[name] for name in detector.input_names[1:]))
    except INPUT_ERRORS as e:
        return fail(one_line(e))
    print(describe(onnx_model, args.out))
    if args.dynamic:
        print(f"camera rig: graph inputs; check sample: {token} (data.{split})")
    else:
        print(f"camera rig and check sample: {token} (data.{split})")

    with torch.no_grad():
        reference = [task[name] for task in model.head_outputs(batch) for name in HEAD_MAPS]
    session = onnxruntime.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    feeds = {INPUT_NAME: batch["img"], **inputs}
    outputs = session.run(detector.output_names, {k: v.numpy() for k, v in feeds.items()})
    diffs = compare_outputs(detector.output_names, reference, outputs)
    width = max(len(n) for n in diffs)
    print("onnxruntime (CPU) vs PyTorch:")
    print(f"  {'output':<{width}}  max abs diff  max rel diff")
    for name, (abs_diff, rel_diff) in diffs.items():
        print(f"  {name:<{width}}  {abs_diff:12.3e}  {rel_diff:12.3e}")
    worst = max(diffs, key=lambda n: diffs[n][1])
    if diffs[worst][1] > args.tolerance:
        print(f"export_onnx.py: error: {worst} differs by {diffs[worst][1]:.3g} relative (> --tolerance "
              f"{args.tolerance:g})", file=sys.stderr)
        return 1
    print(f"all outputs within {args.tolerance:g} relative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
