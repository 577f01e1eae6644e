"""Inference latency and training-step time: what is timed, a per-module breakdown from forward hooks, and a
fabricated input batch.

The timed region is one ``model(mode="predict", **batch)`` call on a collated batch already on the device, up to the
decoded, NMS-filtered boxes (still on the device). On CUDA the device is synchronised before the clock starts and
before it stops. The breakdown runs separate iterations with hooks that also synchronise around every timed module,
so its total is slightly above the plain latency; the plain latency is the headline number.

A training step is timed in three phases (``TRAIN_PHASES``): the loss forward, its backward, and the optimizer step
with ``zero_grad``; its per-module rows are forward time only (the backward of every module is in "backward").
"""
import contextlib
import dataclasses
import math
import time

import numpy as np
import torch

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

# (sensor, part) of ``encoders*.<sensor>.<part>`` -> what the stage is.
ENCODER_STAGES = {
    ("camera", "backbone"): "camera backbone",
    ("camera", "neck"): "camera neck",
    ("camera", "vtransform"): "view transform",
    ("camera", "vtransform2"): "view transform 2 (camera branch)",
    ("lidar", "voxelize"): "LiDAR voxelize",
    ("lidar", "backbone"): "LiDAR sparse encoder",
}
TOP_LEVEL_STAGES = {"fuser": "fuser", "fuser_student": "fuser", "deformAttn": "GCM (deformable attention)",
                    "trans_student": "sim-LiDAR to LiDAR channels"}
DECODE_METHOD = "get_bboxes"


@dataclasses.dataclass(frozen=True)
class Stage:
    label: str
    path: str          # module path in the model, or "<head path>.get_bboxes"
    module: torch.nn.Module
    method: str = None  # a method of ``module`` timed instead of its forward


def inference_stages(model):
    """The stages a BEVFusion-shaped model may run at inference, student (``*_student``) and teacher alike; the
    timer reports those that actually run."""
    stages = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if len(parts) == 3 and parts[0].startswith("encoders") and (parts[1], parts[2]) in ENCODER_STAGES:
            stages.append(Stage(ENCODER_STAGES[(parts[1], parts[2])], name, module))
        elif len(parts) == 1 and parts[0] in TOP_LEVEL_STAGES:
            stages.append(Stage(TOP_LEVEL_STAGES[parts[0]], name, module))
        elif len(parts) == 2 and parts[0].startswith("decoder"):
            stages.append(Stage(f"decoder {parts[1]}", name, module))
        elif len(parts) == 2 and parts[0].startswith("heads"):
            stages.append(Stage("head forward", name, module))
            if callable(getattr(module, DECODE_METHOD, None)):
                stages.append(Stage("decoding + NMS", f"{name}.{DECODE_METHOD}", module, DECODE_METHOD))
    return stages


class StageTimer:
    """Times ``stages`` with forward pre/post hooks (or a wrapped method), synchronising ``device`` on CUDA.

    Use as a context manager; call ``start_iteration()`` before each model call. ``per_iteration[path]`` holds the
    milliseconds spent in that stage in each iteration (several calls in one iteration add up).
    """

    def __init__(self, stages, device):
        self.stages = list(stages)
        self.sync = _synchronizer(device)
        self.per_iteration = {s.path: [] for s in self.stages}
        self.first_call = {}
        self._handles = []
        self._wrapped = []
        self._starts = {}
        self._calls = 0

    def start_iteration(self):
        for times in self.per_iteration.values():
            times.append(0.0)

    def _begin(self, path):
        self.sync()
        self._starts.setdefault(path, []).append(time.perf_counter())

    def _end(self, path):
        self.sync()
        elapsed = time.perf_counter() - self._starts[path].pop()
        if self.per_iteration[path]:
            self.per_iteration[path][-1] += elapsed * 1e3
        if path not in self.first_call:
            self.first_call[path] = self._calls
            self._calls += 1

    def __enter__(self):
        for stage in self.stages:
            if stage.method is None:
                self._handles.append(stage.module.register_forward_pre_hook(
                    lambda _m, _a, path=stage.path: self._begin(path)))
                self._handles.append(stage.module.register_forward_hook(
                    lambda _m, _a, _o, path=stage.path: self._end(path)))
            else:
                self._wrap_method(stage)
        return self

    def _wrap_method(self, stage):
        original = getattr(stage.module, stage.method)

        def timed(*args, **kwargs):
            self._begin(stage.path)
            try:
                return original(*args, **kwargs)
            finally:
                self._end(stage.path)

        # An instance attribute shadows the class method until __exit__ removes it.
        setattr(stage.module, stage.method, timed)
        self._wrapped.append(stage)

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for stage in self._wrapped:
            delattr(stage.module, stage.method)
        self._handles, self._wrapped = [], []
        return False

    def ran(self):
        """Stages that ran at least once, in the order of their first completed call."""
        return sorted((s for s in self.stages if s.path in self.first_call), key=lambda s: self.first_call[s.path])


def _synchronizer(device):
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def reset_peak_memory(device):
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device):
    """``{"mib": float, "kind": str}``: on CUDA the peak of allocated tensors since ``reset_peak_memory``; on the
    CPU the process's peak resident set (model, data and activations; it cannot be reset)."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"mib": torch.cuda.max_memory_allocated(device) / 2 ** 20, "kind": "CUDA peak allocated (torch)"}
    import resource

    return {"mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "kind": "process peak RSS"}


def summarize(times_ms):
    """mean, median, p90, min, max, std (ms) of a list of iteration times."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed iterations")
    return {"mean": float(t.mean()), "median": float(np.median(t)), "p90": float(np.percentile(t, 90)),
            "min": float(t.min()), "max": float(t.max()), "std": float(t.std())}


def autocast_context(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _predict(model, batch, precision, device):
    with torch.no_grad(), autocast_context(precision, device):
        return model(mode="predict", **batch)


def time_latency(model, batch, iters, warmup, precision, device):
    """Milliseconds per ``predict`` call over ``iters`` iterations after ``warmup`` untimed ones."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    sync = _synchronizer(device)
    for _ in range(warmup):
        _predict(model, batch, precision, device)
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        _predict(model, batch, precision, device)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def stage_rows(timer, totals):
    """One row ``{stage, module, mean_ms, median_ms, share}`` per stage that ran, in execution order; ``share`` = its
    mean / the mean of ``totals`` (ms per iteration)."""
    total_mean = float(np.mean(totals))
    rows = []
    for stage in timer.ran():
        times = timer.per_iteration[stage.path]
        rows.append({"stage": stage.label, "module": stage.path, "mean_ms": float(np.mean(times)),
                     "median_ms": float(np.median(times)), "share": float(np.mean(times)) / total_mean})
    return rows


def time_breakdown(model, batch, iters, precision, device, stages=None):
    """Per-stage milliseconds (hooked iterations) and the hooked iterations' totals.

    Returns ``(rows, totals_ms)``; each row ``{stage, module, mean_ms, median_ms, share}`` for a stage that ran,
    in execution order, ``share`` = its mean / the mean hooked total.
    """
    sync = _synchronizer(device)
    totals = []
    with StageTimer(stages if stages is not None else inference_stages(model), device) as timer:
        for _ in range(iters):
            timer.start_iteration()
            sync()
            start = time.perf_counter()
            _predict(model, batch, precision, device)
            sync()
            totals.append((time.perf_counter() - start) * 1e3)
    return stage_rows(timer, totals), totals


# ------------------------------------------------------------------------------------------------ training step
TRAIN_PHASES = ("forward + losses", "backward", "optimizer step")
TEACHER_ROOTS = {"encoders", "fuser", "decoder", "heads"}
STUDENT_ROOTS = {"deformAttn", "trans_student"}
LOSS_METHOD = "loss"


def _role(path):
    root = path.split(".")[0]
    if root.endswith("_student") or root in STUDENT_ROOTS:
        return "student"
    return "teacher" if root in TEACHER_ROOTS else None


def training_stages(model):
    """The stages a training step runs forward: those of ``inference_stages`` without the decoding, plus each head's
    ``loss``. In a model with a student (``encoders_student``) every stage is named ``teacher: ...`` or
    ``student: ...``."""
    distils = hasattr(model, "encoders_student")
    stages = []
    for stage in inference_stages(model):
        if stage.method == DECODE_METHOD:
            continue
        extra = []
        if stage.label == "head forward" and callable(getattr(stage.module, LOSS_METHOD, None)):
            extra = [Stage("head losses", f"{stage.path}.{LOSS_METHOD}", stage.module, LOSS_METHOD)]
        for s in [stage] + extra:
            role = _role(s.path) if distils else None
            stages.append(dataclasses.replace(s, label=f"{role}: {s.label}") if role else s)
    return stages


def total_loss(losses):
    """The sum of a model's loss dict (every value a tensor or a list of tensors), as mmengine's ``parse_losses``."""
    total = 0.0
    for name, value in losses.items():
        total = total + (sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean())
    return total


def first_step_losses(model, batch, optim_wrapper=None):
    """Each loss of one training-mode forward on ``batch`` (no update), as floats: a fixed batch and a seeded
    model give the same values with and without a speed change. Under ``optim_wrapper``'s context (autocast for
    mixed precision) when given."""
    model.train()
    context = optim_wrapper.optim_context(model) if optim_wrapper is not None else contextlib.nullcontext()
    with context:
        losses = model(mode="loss", **batch)
    return {name: float(total_loss({name: value}).detach()) for name, value in losses.items()}


def time_training_steps(model, batch, optim_wrapper, iters, warmup, device, stages=None):
    """Times ``warmup + iters`` training steps on ``batch``: ``model(mode="loss")`` and the summed loss, its
    backward, and the optimizer step (gradient clipping included) with ``zero_grad``. Forward hooks (synchronised
    on CUDA) time ``stages`` (default ``training_stages``) in the timed steps.

    Returns ``(phases, rows, totals)``: ``{phase: [ms per step]}`` for ``TRAIN_PHASES``, per-stage rows as
    ``time_breakdown``'s (``share`` of the mean step), and the step totals in ms.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    sync = _synchronizer(device)
    model.train()

    def step():
        sync()
        marks = [time.perf_counter()]
        with optim_wrapper.optim_context(model):  # autocast under mixed precision
            loss = total_loss(model(mode="loss", **batch))
        sync()
        marks.append(time.perf_counter())
        optim_wrapper.backward(loss)
        sync()
        marks.append(time.perf_counter())
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        sync()
        marks.append(time.perf_counter())
        return [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]

    for _ in range(warmup):
        step()
    phases = {name: [] for name in TRAIN_PHASES}
    with StageTimer(stages if stages is not None else training_stages(model), device) as timer:
        for _ in range(iters):
            timer.start_iteration()
            for name, ms in zip(TRAIN_PHASES, step()):
                phases[name].append(ms)
    totals = [sum(ms) for ms in zip(*phases.values())]
    return phases, stage_rows(timer, totals), totals


def count_training_flops(model, batch, optim_wrapper):
    """Floating-point operations of one training step on ``batch``, ``{"forward", "backward", "total"}``, as
    ``torch.utils.flop_counter`` counts them: matmuls and convolutions (each multiply-add two), the arithmetic of a
    network; elementwise ops, sparse convolutions and the optimizer are not counted. Against a measured step time
    this gives the arithmetic rate achieved: how far a faster kernel could go without removing work. The step
    updates the model, as a training step does."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as forward:
        with optim_wrapper.optim_context(model):
            loss = total_loss(model(mode="loss", **batch))
    with FlopCounterMode(display=False) as backward:
        optim_wrapper.backward(loss)
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    counts = {"forward": forward.get_total_flops(), "backward": backward.get_total_flops()}
    return dict(counts, total=counts["forward"] + counts["backward"])


def matmul_rate(device, precision="fp32", size=2048, iters=10):
    """GFLOP/s of a ``size`` x ``size`` matrix product on ``device`` in ``precision``'s dtype: the arithmetic rate
    the device reaches on the friendliest op, the yardstick for a model's achieved rate measured in the same run."""
    dtype = PRECISIONS[precision] or torch.float32
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = _synchronizer(device)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    return 2 * size ** 3 * iters / (time.perf_counter() - start) / 1e9


def time_data_loading(dataset, batch_size, batches, collate):
    """Milliseconds to read, transform and collate each of ``batches`` batches of ``dataset`` in this process
    (what one loader worker does per batch), samples taken in order from the start."""
    times = []
    for b in range(batches):
        start = time.perf_counter()
        collate([dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def parameters_used(model, batch, precision, device):
    """Number of parameters held directly by modules whose forward runs during ``predict`` (for SimDistill: the
    student's)."""
    called = set()
    handles = [m.register_forward_hook(lambda module, _a, _o: called.add(module)) for m in model.modules()]
    try:
        _predict(model, batch, precision, device)
    finally:
        for handle in handles:
            handle.remove()
    params = {id(p): p for module in called for p in module.parameters(recurse=False)}
    return sum(p.numel() for p in params.values())


# ------------------------------------------------------------------------------------------------ fabricated batch
# The nuScenes rig, approximately: each camera's optical axis in the LiDAR frame (LIDAR_TOP: +y forward, +x right)
# as a yaw from forward, counter-clockwise, in CAMERA_ORDER.
CAMERA_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)
NUSCENES_IMAGE = (900, 1600)
NUSCENES_FOCAL = 1266.0
LIDAR_HEIGHT = 1.84
LIDAR_BEAMS = 32
LIDAR_AZIMUTHS = 1084
LIDAR_ELEVATION_DEG = (-30.67, 10.67)


def fabricated_rig(source_size=NUSCENES_IMAGE):
    """Calibration of six cameras like nuScenes': ``camera_intrinsics, camera2lidar`` ``[6, 4, 4]`` and
    ``lidar2ego`` ``[4, 4]`` (float64 numpy)."""
    height, width = source_size
    focal = NUSCENES_FOCAL * width / NUSCENES_IMAGE[1]
    intrinsics, camera2lidar = [], []
    for yaw in np.deg2rad(CAMERA_YAWS_DEG):
        axis = np.array([-math.sin(yaw), math.cos(yaw), 0.0])   # yaw 0 = +y, counter-clockwise
        right = np.array([axis[1], -axis[0], 0.0])
        down = np.array([0.0, 0.0, -1.0])
        c2l = np.eye(4)
        c2l[:3, :3] = np.stack([right, down, axis], axis=1)
        c2l[:3, 3] = 0.5 * axis + np.array([0.0, 0.0, -0.3])
        camera2lidar.append(c2l)
        k = np.eye(4)
        k[0, 0] = k[1, 1] = focal
        k[0, 2], k[1, 2] = width / 2, height / 2
        intrinsics.append(k)
    lidar2ego = np.eye(4)
    lidar2ego[:3, :3] = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    lidar2ego[:3, 3] = [0.94, 0.0, LIDAR_HEIGHT]
    return np.stack(intrinsics), np.stack(camera2lidar), lidar2ego


def inference_image_aug(source_size, image_size):
    """The test pipeline's ``img_aug_matrix``: resize to the network width (to whole pixels, so each axis has its
    own scale), keep the bottom ``image_size[0]`` rows, centre horizontally."""
    ratio = image_size[1] / source_size[1]
    new_h, new_w = int(source_size[0] * ratio), int(source_size[1] * ratio)
    aug = np.eye(4)
    aug[0, 0], aug[1, 1] = new_w / source_size[1], new_h / source_size[0]
    aug[0, 3] = -int(max(0, new_w - image_size[1]) / 2)
    aug[1, 3] = -(new_h - image_size[0])
    return aug


def fabricated_points(rng, point_cloud_range, sweeps):
    """A 32-beam spinning-LiDAR-like cloud ``[P, 5]`` (x, y, z, intensity, Δt): beams below the horizon hit the
    ground, the others a wall 10-50 m away, repeated for the key frame and ``sweeps`` earlier sweeps, then cropped
    to ``point_cloud_range``."""
    elevation = np.deg2rad(np.linspace(*LIDAR_ELEVATION_DEG, LIDAR_BEAMS))[:, None]
    azimuth = np.linspace(-math.pi, math.pi, LIDAR_AZIMUTHS, endpoint=False)[None, :]
    clouds = []
    for sweep in range(sweeps + 1):
        wall = rng.uniform(10.0, 50.0, size=(1, LIDAR_AZIMUTHS))
        ground = np.where(elevation < 0, LIDAR_HEIGHT / np.tan(-np.minimum(elevation, -1e-3)), np.inf)
        distance = np.minimum(ground, wall / np.cos(elevation)) + rng.normal(0, 0.02, (LIDAR_BEAMS, LIDAR_AZIMUTHS))
        horizontal = distance * np.cos(elevation)
        xyz = np.stack([horizontal * np.cos(azimuth), horizontal * np.sin(azimuth),
                        np.maximum(distance * np.sin(elevation), -LIDAR_HEIGHT)], -1).reshape(-1, 3)
        xyz[:, 1] += 0.5 * sweep  # the car moved between sweeps
        extra = np.stack([rng.uniform(0, 255, len(xyz)), np.full(len(xyz), 0.05 * sweep)], -1)
        clouds.append(np.concatenate([xyz, extra], 1))
    points = np.concatenate(clouds).astype(np.float32)
    lo, hi = np.asarray(point_cloud_range[:3]), np.asarray(point_cloud_range[3:])
    return points[((points[:, :3] >= lo) & (points[:, :3] < hi)).all(1)]


def fabricated_batch(image_size, point_cloud_range, batch_size=1, sweeps=0, source_size=NUSCENES_IMAGE, seed=0):
    """A collated batch with the shapes of the test pipeline's (``docs/conventions.md``): random normalised images
    ``[B, 6, 3, H, W]``, the rig of ``fabricated_rig`` resized as the test pipeline does, a spinning-LiDAR-like
    point cloud per sample, no ground truth."""
    if len(image_size) != 2 or len(point_cloud_range) != 6:
        raise ValueError(f"image_size must be [H, W] and point_cloud_range 6 values, got {image_size!r}, "
                         f"{point_cloud_range!r}")
    rng = np.random.RandomState(seed)
    intrinsics, camera2lidar, lidar2ego = fabricated_rig(source_size)
    lidar2camera = np.linalg.inv(camera2lidar)
    aug = inference_image_aug(source_size, image_size)

    def per_sample(matrix):
        return torch.tensor(matrix, dtype=torch.float32)[None].repeat(batch_size, *([1] * matrix.ndim))

    return {
        "img": torch.tensor(rng.normal(size=(batch_size, 6, 3, *image_size)), dtype=torch.float32),
        "points": [torch.from_numpy(fabricated_points(rng, point_cloud_range, sweeps)) for _ in range(batch_size)],
        "gt_bboxes_3d": [torch.zeros(0, 9) for _ in range(batch_size)],
        "gt_labels_3d": [torch.zeros(0, dtype=torch.long) for _ in range(batch_size)],
        "camera_intrinsics": per_sample(intrinsics),
        "camera2ego": per_sample(lidar2ego[None] @ camera2lidar),
        "lidar2ego": per_sample(lidar2ego),
        "lidar2camera": per_sample(lidar2camera),
        "camera2lidar": per_sample(camera2lidar),
        "lidar2image": per_sample(intrinsics @ lidar2camera),
        "img_aug_matrix": per_sample(np.repeat(aug[None], 6, 0)),
        "lidar_aug_matrix": per_sample(np.eye(4)),
        "metas": [{"token": f"fabricated-{b}"} for b in range(batch_size)],
    }
