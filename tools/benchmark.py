"""Inference latency or training-step time of a model, with its protocol and a per-module breakdown.

    python tools/benchmark.py CONFIG [CKPT] [--batch-size 1] [--iters 20] [--warmup 5] [--precision fp32|fp16|bf16]
                              [--device cpu|cuda] [--train-step | --onnx FILE.onnx] [--json OUT] [--a.b value ...]

Timed: ``model(mode="predict", **batch)`` from a collated batch already on the device to the decoded boxes after
NMS (left on the device); data loading and host copies are excluded. The batch is the first samples of
``data.val`` when its info file exists, else a fabricated batch of the same shapes (said in the protocol). Without
CKPT the weights are random, which changes how many boxes reach NMS. For SimDistill only the student runs.
Peak memory: on CUDA the peak of allocated tensors during the timed iterations, on the CPU the process's peak RSS.

With ``--onnx FILE``: the graph ``tools/export_onnx.py`` wrote from CKPT is timed in the same run, on the same batch
and with the same protocol (onnxruntime's CUDA provider on ``--device cuda`` when it has one, else its CPU
provider), up to the same decoded boxes; the JSON and the last line give its latency and the ratio to PyTorch.

With ``--train-step``: one training step on the first samples of ``data.train`` (its pipeline, augmentation drawn
with a fixed seed; default batch ``data.samples_per_gpu``), the model built with ``torch.manual_seed(0)`` in
training mode and the config's optimizer: the forward with its losses, the backward, and the optimizer step
(clipping included), each timed, with the forward time per module (teacher and student apart for SimDistill). Also
reported: the time one process takes to load and collate a batch (what each of ``data.workers_per_gpu`` loader
workers does), the losses of the first forward, so that a speed change can be checked not to change them, and the
FLOPs of one more step (matmuls and convolutions, ``torch.utils.flop_counter``) with the GFLOP/s the mean step
achieves, next to a 2048x2048 matmul's rate on the same device in the same run: near it, only removing work makes
the step faster.
``--precision fp16|bf16`` (CUDA only) trains under the config's ``fp16`` section set to dynamic loss scaling
(fp16) or bfloat16: mmengine's ``AmpOptimWrapper``, the forward under its autocast.
"""
import argparse
import json
import os
import sys

import torch

from mmdet3d.analysis import benchmark as bench
from mmdet3d.datasets.collate import to_device
from mmdet3d.utils.config import load_config

TIMED = ('model(mode="predict") from a collated batch already on the device to decoded boxes after NMS '
         "(left on the device); data loading and host copies excluded")
TIMED_TRAIN = ('one training step on a collated batch already on the device: model(mode="loss") and the summed '
               "loss, backward, optimizer step with gradient clipping and zero_grad; data loading timed apart")


def parse_args(argv=None):
    """``(args, overrides)``: the tool's own options and the remaining ``--a.b value`` tokens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config", help="YAML config under configs/")
    parser.add_argument("checkpoint", nargs="?", help="model checkpoint (default: random weights)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                        help="default 1; with --train-step data.samples_per_gpu")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (default 5)")
    parser.add_argument("--precision", choices=sorted(bench.PRECISIONS), default="fp32",
                        help="fp32, or fp16/bf16 under torch.autocast")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--train-step", "--train_step", dest="train_step", action="store_true",
                        help="time training steps on data.train instead of inference")
    parser.add_argument("--onnx", help="also time this exported graph of CKPT with onnxruntime (fp32 inference)")
    parser.add_argument("--json", help="write every number to this JSON file")
    return parser.parse_known_args(argv)


def resolve_device(name):
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def build_model(cfg, checkpoint, device):
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.utils.checkpoint import load_checkpoint
    from mmdet3d.registry import MODELS

    if "model" not in cfg:
        raise ValueError("config has no 'model' section")
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def load_batch(cfg, batch_size):
    """``(batch, description)``: the first ``batch_size`` samples of ``data.val`` (repeated if it is smaller), or a
    fabricated batch when its info file does not exist."""
    import mmdet3d.datasets  # noqa: F401  (registers the datasets and transforms)
    from mmdet3d.datasets import collate
    from mmdet3d.registry import DATASETS

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    val = (cfg.get("data") or {}).get("val")
    reason = "config has no data.val"
    if val:
        try:
            dataset = DATASETS.build(val)
        except FileNotFoundError as e:
            reason = str(e)
        else:
            if len(dataset) == 0:
                raise ValueError("data.val is empty")
            batch = collate([dataset[i % len(dataset)] for i in range(batch_size)])
            return batch, f"real: samples 0..{batch_size - 1} of data.val ({val.get('ann_file', 'dataset')})"
    for key in ("image_size", "point_cloud_range"):
        if cfg.get(key) is None:
            raise ValueError(f"config key '{key}' is needed to fabricate a batch ({reason})")
    batch = bench.fabricated_batch(list(cfg.image_size), list(cfg.point_cloud_range), batch_size,
                                   sweeps=int(cfg.get("sweeps_num") or 0),
                                   source_size=tuple(cfg.get("source_image_size") or bench.NUSCENES_IMAGE))
    return batch, (f"fabricated: random images, nuScenes-like rig, a simulated 32-beam LiDAR with "
                   f"{int(cfg.get('sweeps_num') or 0)} sweeps ({reason})")


def describe_device(device):
    if device.type == "cuda":
        return (f"cuda: {torch.cuda.get_device_name(device)} (synchronised around the timed call and every timed "
                f"module; cudnn.benchmark={torch.backends.cudnn.benchmark})")
    return f"cpu: {torch.get_num_threads()} threads"


def protocol_of(args, cfg_model_type, batch, data, device, params_used, params_total):
    shapes = {"img": list(batch["img"].shape)} if "img" in batch else {}
    if batch.get("points") is not None:
        shapes["points per sample"] = [int(p.shape[0]) for p in batch["points"]]
    return {
        "config": args.config,
        "model": cfg_model_type,
        "weights": args.checkpoint or "random initialisation (no checkpoint)",
        "timed": TIMED,
        "data": data,
        "batch_size": len(batch["img"]) if "img" in batch else args.batch_size,
        "input_shapes": shapes,
        "precision": args.precision if args.precision == "fp32" else f"{args.precision} (torch.autocast)",
        "warmup_iters": args.warmup,
        "timed_iters": args.iters,
        "device": describe_device(device),
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if device.type == "cuda" else ""),
        "parameters_used_at_inference": params_used,
        "parameters_total": params_total,
    }


def format_protocol(protocol):
    width = max(len(k) for k in protocol)
    lines = ["benchmark protocol"]
    lines += [f"  {k.replace('_', ' '):<{width}}  {v}" for k, v in protocol.items()]
    return "\n".join(lines)


def stage_table(title, rows, other_label, digits):
    """The per-module table's lines and its column widths (``stage_w``, ``module_w``) for rows to follow."""
    stage_w = max(len(other_label), *(len(r["stage"]) for r in rows))
    module_w = max(len("module"), *(len(r["module"]) for r in rows))
    lines = ["", title, f"  {'stage':<{stage_w}}  {'module':<{module_w}}  {'mean ms':>9}  {'share':>6}"]
    lines += [f"  {r['stage']:<{stage_w}}  {r['module']:<{module_w}}  {r['mean_ms']:9.{digits}f}  "
              f"{100 * r['share']:5.1f}%" for r in rows]
    return lines, stage_w, module_w


def format_results(latency, rows, breakdown_total):
    lines = ["", "latency (ms, plain iterations): " + "  ".join(f"{k} {v:.2f}" for k, v in latency.items())]
    if rows:
        table, stage_w, module_w = stage_table("per-module breakdown (hooked iterations, synchronised per module):",
                                               rows, "other (between stages)", 2)
        lines += table
        other = breakdown_total - sum(r["mean_ms"] for r in rows)
        lines.append(f"  {'other (between stages)':<{stage_w}}  {'':<{module_w}}  {other:9.2f}  "
                     f"{100 * other / breakdown_total:5.1f}%")
        lines.append(f"  {'total':<{stage_w}}  {'':<{module_w}}  {breakdown_total:9.2f}  {100.0:5.1f}%")
    return "\n".join(lines)


def fail(error):
    print(f"benchmark.py: error: {error}", file=sys.stderr)
    return 2


def load_train_batch(cfg, batch_size, seed=0):
    """``(dataset, batch, description)``: the first ``batch_size`` samples of ``data.train`` through its pipeline,
    the augmentation drawn with ``seed``; without points when the model does not read them in training."""
    import random

    import numpy as np

    import mmdet3d.datasets  # noqa: F401  (registers the datasets and transforms)
    from mmdet3d.apis.runner import model_reads_points
    from mmdet3d.datasets import collate
    from mmdet3d.datasets.pipelines.modality import without_points
    from mmdet3d.registry import DATASETS

    train = (cfg.get("data") or {}).get("train")
    if not train:
        raise ValueError("config has no data.train (--train-step times training on it)")
    train = {k: v for k, v in dict(train).items() if k not in ("samples_per_gpu", "workers_per_gpu")}
    if not model_reads_points(cfg["model"], training=True):
        train = without_points(train)
    dataset = DATASETS.build(train)
    if len(dataset) == 0:
        raise ValueError("data.train is empty")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    batch = collate([dataset[i % len(dataset)] for i in range(batch_size)])
    return dataset, batch, f"real: samples 0..{batch_size - 1} of data.train ({train.get('ann_file', 'dataset')})"


def format_flops(flops):
    return (f"arithmetic: {flops['total'] / 1e9:.1f} GFLOP per step (forward {flops['forward'] / 1e9:.1f}, backward "
            f"{flops['backward'] / 1e9:.1f}; matmuls and convolutions), {flops['gflop_per_s']:.1f} GFLOP/s at the "
            f"mean step = {100 * flops['share_of_matmul_rate']:.0f} % of a 2048x2048 matmul's "
            f"{flops['matmul_gflop_per_s']:.1f} GFLOP/s on this device")


def format_train_results(phases, rows, total_ms, loading_ms, workers):
    lines = ["", "training step (ms, hooked steps): " + "  ".join(
        f"{name} {bench.summarize(ms)['mean']:.1f}" for name, ms in phases.items()) + f"  total {total_ms:.1f}"]
    if rows:
        table, stage_w, module_w = stage_table("per-module forward time (share of the whole step):", rows,
                                               "other forward (between stages)", 1)
        lines += table
        forward = bench.summarize(phases[bench.TRAIN_PHASES[0]])["mean"]
        other = forward - sum(r["mean_ms"] for r in rows)
        lines.append(f"  {'other forward (between stages)':<{stage_w}}  {'':<{module_w}}  {other:9.1f}  "
                     f"{100 * other / total_ms:5.1f}%")
        for name in bench.TRAIN_PHASES[1:]:
            ms = bench.summarize(phases[name])["mean"]
            lines.append(f"  {name:<{stage_w}}  {'':<{module_w}}  {ms:9.1f}  {100 * ms / total_ms:5.1f}%")
    lines.append(f"\ndata loading: {bench.summarize(loading_ms)['mean']:.1f} ms per batch in one process "
                 f"(data.workers_per_gpu = {workers})")
    return "\n".join(lines)


def run_inference(args, cfg, device):
    model = build_model(cfg, args.checkpoint, device)
    batch, data = load_batch(cfg, args.batch_size or 1)
    batch = to_device(batch, device)
    try:
        params_used = bench.parameters_used(model, batch, args.precision, device)
    except Exception as e:  # an op without a kernel for this dtype (spconv on CPU has neither fp16 nor bf16)
        if args.precision == "fp32":
            raise
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{type(model).__name__} does not run under {args.precision} autocast on {device.type} "
                         f"({type(e).__name__}: {reason})")
    protocol = protocol_of(args, type(model).__name__, batch, data, device, params_used,
                           sum(p.numel() for p in model.parameters()))
    print(format_protocol(protocol), flush=True)

    bench.reset_peak_memory(device)
    times = bench.time_latency(model, batch, args.iters, args.warmup, args.precision, device)
    memory = bench.peak_memory(device)
    rows, hooked = bench.time_breakdown(model, batch, args.iters, args.precision, device)
    latency = bench.summarize(times)
    hooked_summary = bench.summarize(hooked)
    print(format_results(latency, rows, hooked_summary["mean"]), flush=True)
    print(f"peak memory: {memory['mib']:.0f} MiB ({memory['kind']})", flush=True)
    result = {"protocol": protocol, "latency_ms": dict(latency, iterations=times), "peak_memory": memory,
              "breakdown": {"total_ms": hooked_summary["mean"], "total_ms_stats": hooked_summary,
                            "other_ms": hooked_summary["mean"] - sum(r["mean_ms"] for r in rows),
                            "modules": rows}}
    if args.onnx:
        result["onnx"] = time_onnx(args, cfg, batch, device, latency)
    return result


def onnx_providers(device):
    import onnxruntime

    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def time_onnx(args, cfg, batch, device, torch_latency):
    """Latency of the exported graph on ``batch``, as ``time_latency`` times the PyTorch model."""
    from mmdet3d.deploy import OnnxDetector
    from mmdet3d.deploy.calibration import build_head

    detector = OnnxDetector(args.onnx, build_head(cfg), checkpoint=args.checkpoint,
                            providers=onnx_providers(device))
    times = bench.time_latency(detector, batch, args.iters, args.warmup, "fp32", device)
    latency = bench.summarize(times)
    provider = detector.session.get_providers()[0]
    ratio = torch_latency["mean"] / latency["mean"]
    print(f"\nonnxruntime ({provider}, {args.onnx}): " + "  ".join(f"{k} {v:.2f}" for k, v in latency.items())
          + f"\nPyTorch / onnxruntime mean latency: {ratio:.2f}x", flush=True)
    return {"file": args.onnx, "provider": provider, "latency_ms": dict(latency, iterations=times),
            "pytorch_over_onnxruntime": ratio}


def run_train_step(args, cfg, device):
    from mmengine.optim import build_optim_wrapper

    from mmdet3d.apis.optim import build_optim_wrapper_cfg
    from mmdet3d.datasets import collate

    if args.precision != "fp32":
        if device.type != "cuda":
            raise ValueError(f"--train-step --precision {args.precision}: mixed-precision training needs CUDA "
                             "(mmengine's AmpOptimWrapper)")
        cfg["fp16"] = {"loss_scale": "dynamic"} if args.precision == "fp16" else {"dtype": "bfloat16"}
    batch_size = args.batch_size or int((cfg.get("data") or {}).get("samples_per_gpu", 1))
    dataset, batch, data = load_train_batch(cfg, batch_size)
    torch.manual_seed(0)
    model = build_model(cfg, args.checkpoint, device)
    optim_wrapper = build_optim_wrapper(model, build_optim_wrapper_cfg(cfg, device.type))
    batch = to_device(batch, device)
    losses = bench.first_step_losses(model, batch, optim_wrapper)
    protocol = protocol_of(args, type(model).__name__, batch, data, device, None,
                           sum(p.numel() for p in model.parameters()))
    protocol.update(timed=TIMED_TRAIN, batch_size=batch_size, precision=args.precision,
                    parameters_trained=sum(p.numel() for p in model.parameters() if p.requires_grad),
                    optimizer=cfg["optimizer"].get("type"))
    protocol.pop("parameters_used_at_inference")
    print(format_protocol(protocol), flush=True)
    phases, rows, totals = bench.time_training_steps(model, batch, optim_wrapper, args.iters, args.warmup, device)
    loading = bench.time_data_loading(dataset, batch_size, min(args.iters, 5), collate)
    step = bench.summarize(totals)
    flops = bench.count_training_flops(model, batch, optim_wrapper)
    flops["gflop_per_s"] = flops["total"] / step["mean"] / 1e6
    flops["matmul_gflop_per_s"] = bench.matmul_rate(device, args.precision)
    flops["share_of_matmul_rate"] = flops["gflop_per_s"] / flops["matmul_gflop_per_s"]
    workers = int((cfg.get("data") or {}).get("workers_per_gpu", 0))
    print(format_train_results(phases, rows, step["mean"], loading, workers), flush=True)
    print(format_flops(flops), flush=True)
    print("first-step losses: " + "  ".join(f"{k} {v:.6f}" for k, v in losses.items()), flush=True)
    return {"protocol": protocol, "step_ms": dict(step, iterations=totals),
            "phases_ms": {name: bench.summarize(ms) for name, ms in phases.items()},
            "breakdown": {"modules": rows}, "data_loading_ms": dict(bench.summarize(loading), workers=workers),
            "flops_per_step": flops,
            "first_step_losses": losses}


def main(argv=None):
    args, overrides = parse_args(argv)
    try:
        if args.iters < 1 or args.warmup < 0:
            raise ValueError(f"need --iters >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.onnx and (args.train_step or args.precision != "fp32" or not args.checkpoint):
            raise ValueError("--onnx times fp32 inference of the checkpoint it was exported from: give CKPT, "
                             "without --train-step or --precision")
        cfg = load_config(args.config, overrides)
        device = resolve_device(args.device)
        result = (run_train_step if args.train_step else run_inference)(args, cfg, device)
    except (ValueError, FileNotFoundError) as e:
        return fail(e)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results written to {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
