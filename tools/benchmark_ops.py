"""Benchmarks the custom ops at nuScenes scale: time and peak memory, forward and forward+backward.

BEV pooling (6 cameras, D = 118 depth bins 1-60 m, 32x88 features, C = 80, grid 360x360x1 at 0.3 m, the frustum of
the real 6-camera rig in tests/data/sample.json after BEVFusion's test-time resize/crop to 256x704):
  (a) the original's design, as the baseline: depth x feature outer product, ranks, argsort, interval sums by the
      cumsum trick (the LSS/BEVFusion PyTorch path);
  (b) ``bev_pool`` on the outer product;
  (c) ``bev_pool_depth``, building its plan every call;
  (d) ``bev_pool_depth`` with a cached ``BEVPoolPlan``.
Also: hard voxelization of 300k points (the real key-frame sweep tiled with jitter), rotated NMS of 1,000 boxes,
deformable attention at the GCM size (1 level, 180x180 queries, 8 heads, 20 points, 80 channels): the PyTorch path
(``grid_sample``) and, on CUDA, the Triton kernels.

Every case runs in a fresh process so that peak memory is its own: on CUDA the allocator's peak above the inputs,
on CPU the growth of the resident set during the first call. Times are medians.

    python tools/benchmark_ops.py --device cuda --json bench.json
    python tools/benchmark_ops.py --device cpu --quick
    python tools/benchmark_ops.py --device cpu --toy      # every case at toy sizes, seconds (checks the tool)
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RIG = os.path.join(REPO, "tests", "data", "sample.json")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
GRID = (360, 360, 1)
CHANNELS = 80
BEV_VARIANTS = {
    "a": "original design (outer product + argsort + cumsum intervals)",
    "b": "bev_pool on the outer product",
    "c": "bev_pool_depth, plan every call",
    "d": "bev_pool_depth, cached plan",
}


# ----------------------------------------------------------------------------------------------------- inputs
def frustum_coords(batch_size, depth_step=0.5):
    """Integer BEV cells ``[6B, D, 32, 88, 3]`` of the LSS frustum of the real rig, as BEVFusion computes them."""
    with open(RIG) as f:
        cameras = json.load(f)["cameras"]
    ds = torch.arange(1.0, 60.0, depth_step, dtype=torch.float64)
    xs = torch.linspace(0, 703, 88, dtype=torch.float64)
    ys = torch.linspace(0, 255, 32, dtype=torch.float64)
    d, v, u = torch.meshgrid(ds, ys, xs, indexing="ij")
    # Undo the test-time image augmentation (resize 0.48, crop (32, 176)), lift by depth, camera -> LiDAR.
    pixels = torch.stack([(u + 32) / 0.48 * d, (v + 176) / 0.48 * d, d], -1)
    cams = []
    for name in CAMERAS:
        intrinsic = torch.tensor(cameras[name]["intrinsic"], dtype=torch.float64)
        cam2lidar = torch.linalg.inv(torch.tensor(cameras[name]["lidar2cam"], dtype=torch.float64))
        points = pixels @ (cam2lidar[:3, :3] @ torch.linalg.inv(intrinsic)).T + cam2lidar[:3, 3]
        lower = torch.tensor([-54.0, -54.0, -10.0], dtype=torch.float64)
        cams.append(((points - lower) / torch.tensor([0.3, 0.3, 20.0], dtype=torch.float64)).long())
    return torch.stack(cams).repeat(batch_size, 1, 1, 1, 1)


def bev_inputs(batch_size, device, depth_step=0.5, channels=CHANNELS):
    coords = frustum_coords(batch_size, depth_step).to(device)
    g = torch.Generator().manual_seed(0)
    BN, D, fH, fW, _ = coords.shape
    depth = torch.randn(BN, D, fH, fW, generator=g).softmax(1).to(device)
    feats = torch.randn(BN, channels, fH, fW, generator=g).to(device)
    return depth, feats, coords


# --------------------------------------------------------------------------------------------- BEV variants
def original_bev_pool(depth, feats, coords4, batch_size):
    """(a): filter, rank, argsort, cumsum trick (interval sums), scatter — LSS's QuickCumsum path."""
    from mmdet3d.ops.bev_pool import outer_product_rows

    X, Y, Z = GRID
    x = outer_product_rows(depth, feats)
    kept = ((coords4[:, 0] >= 0) & (coords4[:, 0] < X) & (coords4[:, 1] >= 0) & (coords4[:, 1] < Y)
            & (coords4[:, 2] >= 0) & (coords4[:, 2] < Z))
    x, geom = x[kept], coords4[kept]
    ranks = geom[:, 0] * (Y * Z * batch_size) + geom[:, 1] * (Z * batch_size) + geom[:, 2] * batch_size + geom[:, 3]
    order = ranks.argsort()
    x, geom, ranks = x[order], geom[order], ranks[order]
    x = x.cumsum(0)
    last = torch.ones_like(ranks, dtype=torch.bool)
    last[:-1] = ranks[1:] != ranks[:-1]
    x, geom = x[last], geom[last]
    x = torch.cat([x[:1], x[1:] - x[:-1]])
    out = x.new_zeros(batch_size, x.shape[1], Z, X, Y)
    out[geom[:, 3], :, geom[:, 2], geom[:, 0], geom[:, 1]] = x
    return torch.cat(out.unbind(2), 1)


def make_bev_variant(name, batch_size, depth, feats, coords):
    from mmdet3d.ops import BEVPoolPlan, bev_pool_depth
    from mmdet3d.ops.bev_pool import bev_pool_outer_product, cells_with_batch

    if name == "a":
        coords4 = cells_with_batch(coords, batch_size)
        return lambda d, f: original_bev_pool(d, f, coords4, batch_size)
    if name == "b":
        return lambda d, f: bev_pool_outer_product(d, f, coords, batch_size, GRID)
    if name == "c":
        return lambda d, f: bev_pool_depth(d, f, coords, batch_size, GRID)
    plan = BEVPoolPlan(coords, batch_size, GRID)
    return lambda d, f: plan(d, f)


# ------------------------------------------------------------------------------------------------ measuring
def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, device, repeats, warmup):
    """(median ms, peak MB above what was allocated before). The first call gives the peak (CPU: RSS growth)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = rss_bytes()
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(peak, 0) / 2**20


def bev_case(device, repeats, warmup, mode, variant, batch_size, depth_step=0.5, channels=CHANNELS):
    depth, feats, coords = bev_inputs(batch_size, device, depth_step, channels)
    fn = make_bev_variant(variant, batch_size, depth, feats, coords)
    if mode == "forward":
        def step():
            with torch.no_grad():
                fn(depth, feats)
    else:
        d = depth.clone().requires_grad_(True)
        f = feats.clone().requires_grad_(True)

        def step():
            d.grad = f.grad = None
            fn(d, f).sum().backward()
    ms, mb = measure(step, device, repeats, warmup)
    valid = ((coords[..., 0] >= 0) & (coords[..., 0] < GRID[0]) & (coords[..., 1] >= 0) & (coords[..., 1] < GRID[1])
             & (coords[..., 2] >= 0) & (coords[..., 2] < GRID[2])).sum().item()
    return {"case": "bev_pool", "variant": variant, "B": batch_size, "depth_bins": depth.shape[1],
            "channels": channels, "entries": coords[..., 0].numel(),
            "entries_in_grid": valid, f"{mode}_ms": ms, f"{mode}_peak_mb": mb}


def voxelization_case(device, repeats, warmup, mode, num_points=300_000):
    from mmdet3d.ops import Voxelization

    lidar = [p for p in os.listdir(os.path.join(REPO, "tests", "data")) if p.endswith(".pcd.bin")][0]
    sweep = np.fromfile(os.path.join(REPO, "tests", "data", lidar), dtype=np.float32).reshape(-1, 5)
    g = torch.Generator().manual_seed(0)
    base = torch.from_numpy(sweep).repeat(math.ceil(num_points / len(sweep)), 1)[:num_points]
    points = base + torch.randn(base.shape, generator=g) * torch.tensor([0.05, 0.05, 0.02, 0.0, 0.0])
    points = points[torch.randperm(num_points, generator=g)].to(device)
    layer = Voxelization([0.075, 0.075, 0.2], [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0], 10, (120000, 160000)).eval()
    ms, mb = measure(lambda: layer(points), device, repeats, warmup)
    return {"case": "voxelization", "points": num_points, "voxels": int(layer(points)[0].shape[0]),
            "forward_ms": ms, "forward_peak_mb": mb}


def nms_case(device, repeats, warmup, mode, num_boxes=1000):
    from mmdet3d.ops import box_iou_bev, nms_bev

    g = torch.Generator().manual_seed(0)
    centres = torch.rand(num_boxes, 2, generator=g) * 100 - 50
    sizes = torch.rand(num_boxes, 2, generator=g) * torch.tensor([4.0, 1.5]) + torch.tensor([0.5, 0.5])
    yaw = (torch.rand(num_boxes, 1, generator=g) * 2 - 1) * math.pi
    boxes = torch.cat([centres, sizes, yaw], 1).to(device)
    scores = torch.rand(num_boxes, generator=g).to(device)
    nms_ms, nms_mb = measure(lambda: nms_bev(boxes, scores, 0.2), device, repeats, warmup)
    iou_ms, _ = measure(lambda: box_iou_bev(boxes, boxes), device, repeats, warmup)
    return {"case": "nms_bev", "boxes": num_boxes, "kept": int(nms_bev(boxes, scores, 0.2).numel()),
            "forward_ms": nms_ms, "forward_peak_mb": nms_mb, "iou_matrix_ms": iou_ms}


def msda_case(device, repeats, warmup, mode, implementation="pytorch", side=180, heads=8, points=20, channels=80):
    from mmdet3d.ops.msda import msda

    if implementation == "triton":
        kernel = msda._triton_kernel()
        if kernel is None:
            raise RuntimeError("Triton is not installed")
    else:
        def kernel(value, shapes, starts, loc, attn):
            return msda.multi_scale_deformable_attn_reference(value, [(side, side)], loc, attn)
    g = torch.Generator().manual_seed(0)
    Q = side * side
    value = torch.randn(1, Q, heads, channels // heads, generator=g).to(device)
    shapes = torch.tensor([[side, side]], device=device)
    starts = torch.zeros(1, dtype=torch.long, device=device)
    loc = torch.rand(1, Q, heads, 1, points, 2, generator=g).to(device)
    attn = torch.rand(1, Q, heads, 1, points, generator=g).softmax(-1).to(device)
    if mode == "forward":
        def step():
            with torch.no_grad():
                kernel(value, shapes, starts, loc, attn)
    else:
        v, l, a = (t.clone().requires_grad_(True) for t in (value, loc, attn))

        def step():
            kernel(v, shapes, starts, l, a).sum().backward()
    ms, mb = measure(step, device, repeats, warmup)
    return {"case": "msda", "implementation": implementation, "queries": Q, "heads": heads, "points": points,
            "channels": channels, f"{mode}_ms": ms, f"{mode}_peak_mb": mb}


CASES = {"bev_pool": bev_case, "voxelization": voxelization_case, "nms_bev": nms_case, "msda": msda_case}
DIFFERENTIABLE = ("bev_pool", "msda")
TOY_SIZES = {"bev_pool": {"depth_step": 8.0, "channels": 8}, "voxelization": {"num_points": 20_000},
             "nms_bev": {"num_boxes": 100}, "msda": {"side": 24, "points": 4}}


def _child(queue, case, device, repeats, warmup, mode, kwargs):
    try:
        queue.put(CASES[case](device, repeats, warmup, mode, **kwargs))
    except Exception as error:  # reported by the parent, which goes on with the other cases
        queue.put({"case": case, **kwargs, "error": f"{type(error).__name__}: {error}"})


def run_isolated(case, device, repeats, warmup, **kwargs):
    """Runs the forward (and the forward+backward) measurement each in a fresh process; merges the results."""
    ctx = mp.get_context("spawn")
    merged = {}
    for mode in ("forward", "forward_backward") if case in DIFFERENTIABLE else ("forward",):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(queue, case, device, repeats, warmup, mode, kwargs))
        proc.start()
        result = queue.get()
        proc.join()
        merged.update(result)
        if "error" in result:
            break
    return merged


# ---------------------------------------------------------------------------------------------------- report
def format_table(results):
    lines = [f"{'case':<14}{'variant':<46}{'B':>3}{'fwd ms':>11}{'fwd MB':>10}{'f+b ms':>11}{'f+b MB':>10}"
             f"{'f+b speed-up':>14}"]
    baseline = {r["B"]: r for r in results if r.get("variant") == "a" and "error" not in r}
    msda_baseline = next((r for r in results if r.get("implementation") == "pytorch" and "error" not in r), None)

    def cell(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for r in results:
        if "error" in r:
            lines.append(f"{r['case']:<14}{r.get('variant', ''):<46} ERROR {r['error']}")
            continue
        label = BEV_VARIANTS.get(r.get("variant"), "")
        label = f"({r['variant']}) {label}" if label else {
            "voxelization": f"{r.get('points')} points -> {r.get('voxels')} voxels",
            "nms_bev": f"{r.get('boxes')} boxes -> {r.get('kept')} (IoU matrix {r.get('iou_matrix_ms', 0):.1f} ms)",
            "msda": f"{r.get('implementation')}: {r.get('queries')} queries x {r.get('heads')} heads x "
                    f"{r.get('points')} points",
        }[r["case"]]
        ratio = ""
        base = baseline.get(r.get("B"))
        if r["case"] == "bev_pool" and base is not None:
            ratio = f"{base['forward_backward_ms'] / r['forward_backward_ms']:.1f}x"
        if r["case"] == "msda" and msda_baseline is not None:
            ratio = f"{msda_baseline['forward_backward_ms'] / r['forward_backward_ms']:.1f}x"
        lines.append(f"{r['case']:<14}{label[:45]:<46}{r.get('B', ''):>3}{cell(r.get('forward_ms'), '.2f'):>11}"
                     f"{cell(r.get('forward_peak_mb'), '.0f'):>10}{cell(r.get('forward_backward_ms'), '.2f'):>11}"
                     f"{cell(r.get('forward_backward_peak_mb'), '.0f'):>10}{ratio:>14}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="B = 1 only and few repeats (for CPUs)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated BEV batch sizes (default 1,4)")
    parser.add_argument("--variants", default="abcd", help="BEV pooling variants to run (default abcd)")
    parser.add_argument("--skip-other-ops", action="store_true", help="only BEV pooling")
    parser.add_argument("--toy", action="store_true",
                        help="toy sizes (8 depth bins, 8 channels, 20k points, 100 boxes, 24x24 queries): checks "
                             "that every case runs, measures nothing")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1" if args.quick else "1,4")).split(",")]
    repeats, warmup = (3, 1) if args.quick or args.toy else ((20, 5) if args.device == "cuda" else (5, 1))
    sizes = TOY_SIZES if args.toy else {case: {} for case in CASES}

    results = []
    for batch_size in batch_sizes:
        for variant in args.variants:
            if variant not in BEV_VARIANTS:
                parser.error(f"--variants: unknown variant {variant!r} (choose from abcd)")
            results.append(run_isolated("bev_pool", args.device, repeats, warmup, variant=variant,
                                        batch_size=batch_size, **sizes["bev_pool"]))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
    if not args.skip_other_ops:
        for case in ("voxelization", "nms_bev"):
            results.append(run_isolated(case, args.device, repeats, warmup, **sizes[case]))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
        for implementation in ("pytorch", "triton") if args.device == "cuda" else ("pytorch",):
            results.append(run_isolated("msda", args.device, repeats, warmup, implementation=implementation,
                                        **sizes["msda"]))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)

    from mmdet3d.ops.common import load_extension

    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cuda_extension": load_extension() is not None, "repeats": repeats, "warmup": warmup,
           "grid": GRID, "channels": CHANNELS, "depth_bins": 118, "feature_size": [32, 88], "toy": args.toy}
    print(f"\n{env['device']}, torch {env['torch']}, CUDA extension built: {env['cuda_extension']}, "
          f"median of {repeats}")
    print(format_table(results))
    print("speed-up: forward+backward time of (a) / this row for BEV pooling; of the PyTorch path / this row for "
          "deformable attention")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
