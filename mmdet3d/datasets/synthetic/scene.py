"""Scene layout: the ego's drive along the road, and objects of every class placed where they belong (lanes, parking
strips, sidewalks, open lots), parked or moving with plausible speeds, never overlapping each other or the ego at any
rendered instant."""
import colorsys
from dataclasses import dataclass, field

import numpy as np

from . import road as R
from .catalogue import DETECTION_CLASSES, EVAL_RANGE, OBJECT_CLASSES
from .rig import EGO_CENTRE_X, EGO_LENGTH, EGO_WIDTH, LIDAR_TO_EGO

KEY_FRAME_PERIOD = 0.5   # s (2 Hz key frames)
SWEEP_PERIOD = 0.05      # s (20 Hz LiDAR)
GROUND_CLEARANCE = 0.02  # boxes float this far above the ground plane so ground returns never touch a box face
OBJECT_GAP = 0.3         # m, minimum free space between two objects' footprints
EGO_GAP = 1.5            # m, minimum free space around the ego's footprint
LIDAR_X = LIDAR_TO_EGO[1][0]

VEHICLES = ("car", "truck", "construction_vehicle", "bus", "trailer")
CYCLES = ("motorcycle", "bicycle")
# Where and how objects of a class appear: (mode, probability, speed range m/s).
PLACEMENT_MODES = {
    "car": (("lane", 0.4, (3.0, 10.0)), ("lane", 0.08, (0.0, 0.0)), ("strip", 0.25, None), ("lot", 0.27, None)),
    "truck": (("lane", 0.35, (3.0, 9.0)), ("lane", 0.05, (0.0, 0.0)), ("strip", 0.3, None), ("lot", 0.3, None)),
    "bus": (("lane", 0.5, (3.0, 9.0)), ("strip", 0.5, None)),
    "trailer": (("strip", 0.4, None), ("lot", 0.6, None)),
    "construction_vehicle": (("lot", 0.8, None), ("lane", 0.2, (1.0, 3.0))),
    "motorcycle": (("lane", 0.45, (3.0, 10.0)), ("strip", 0.3, None), ("sidewalk", 0.25, None)),
    "bicycle": (("bike_lane", 0.3, (2.0, 5.0)), ("sidewalk", 0.2, (2.0, 4.0)), ("sidewalk", 0.5, None)),
    "pedestrian": (("sidewalk", 0.35, (0.8, 1.7)), ("sidewalk", 0.2, None), ("crossing", 0.15, (1.0, 1.6)),
                   ("open", 0.15, (0.8, 1.5)), ("open", 0.15, None)),
    "traffic_cone": (("lane_edge", 0.5, None), ("strip", 0.3, None), ("sidewalk", 0.2, None)),
    "barrier": (("strip", 0.4, None), ("lane_edge", 0.2, None), ("sidewalk", 0.2, None), ("open", 0.2, None)),
    "pushable_pullable": (("sidewalk", 0.8, None), ("open", 0.2, None)),
}
ROWS = {"traffic_cone": ((3, 6), (1.5, 3.0)), "barrier": ((2, 6), None)}  # items per row, spacing (None: adjacent)


@dataclass
class SceneLayout:
    """Everything that moves, sampled at ``times`` (s): key frame ``k`` is ``times[key_frames[k]]`` and its sweeps
    are ``times[sweep_frames[k]]`` (oldest first). Poses are world ``(x, y, yaw)``; sizes ``(l, w, h)``."""
    road: R.RoadFrame
    times: np.ndarray
    key_frames: np.ndarray
    sweep_frames: list
    ego: np.ndarray
    ego_speed: float
    names: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    attributes: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    colours: list = field(default_factory=list)
    poses: list = field(default_factory=list)

    def boxes(self, t):
        """World boxes ``[N, 7]`` ``(x, y, z_centre, l, w, h, yaw)`` at time index ``t``."""
        if not self.poses:
            return np.zeros((0, 7))
        poses = np.stack(self.poses)[:, t]
        sizes = np.asarray(self.sizes)
        return np.column_stack([poses[:, :2], sizes[:, 2] / 2 + GROUND_CLEARANCE, sizes, poses[:, 2]])


def time_grid(frames, sweeps):
    """(times, key frame indices, per key frame the sweep indices oldest first)."""
    stamps = sorted({round(k * KEY_FRAME_PERIOD - j * SWEEP_PERIOD, 6)
                     for k in range(frames) for j in range(sweeps + 1)})
    index = {t: i for i, t in enumerate(stamps)}
    key = np.array([index[round(k * KEY_FRAME_PERIOD, 6)] for k in range(frames)])
    sweep = [np.array([index[round(k * KEY_FRAME_PERIOD - j * SWEEP_PERIOD, 6)] for j in range(sweeps, 0, -1)],
                      dtype=np.int64) for k in range(frames)]
    return np.array(stamps), key, sweep


def _footprints_overlap(c1, yaw1, half1, c2, yaw2, half2):
    """Separating-axis test of oriented rectangles (broadcast over leading dims): centres ``[..., 2]``, yaws ``[...]``,
    half extents ``[..., 2]``."""
    axes1 = np.stack([np.stack([np.cos(yaw1), np.sin(yaw1)], -1), np.stack([-np.sin(yaw1), np.cos(yaw1)], -1)])
    axes2 = np.stack([np.stack([np.cos(yaw2), np.sin(yaw2)], -1), np.stack([-np.sin(yaw2), np.cos(yaw2)], -1)])
    delta = c2 - c1
    separated = False
    for axis in (*axes1, *axes2):
        r1 = half1[..., 0] * np.abs((axes1[0] * axis).sum(-1)) + half1[..., 1] * np.abs((axes1[1] * axis).sum(-1))
        r2 = half2[..., 0] * np.abs((axes2[0] * axis).sum(-1)) + half2[..., 1] * np.abs((axes2[1] * axis).sum(-1))
        separated = separated | (np.abs((delta * axis).sum(-1)) > r1 + r2)
    return ~separated


def _segments_cross_footprints(start, end, centre, yaw, half):
    """Whether segments ``start -> end`` (``[..., 2]``) cross oriented rectangles (broadcast over leading dims), by
    clipping the segment against the rectangle's slabs in its own frame."""
    c, s = np.cos(yaw), np.sin(yaw)

    def local(p):
        d = p - centre
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)

    a, b = local(start), local(end)
    step = b - a
    step = np.where(step == 0.0, 1e-30, step)
    t0, t1 = 0.0, 1.0
    for axis in range(2):
        ta = (-half[..., axis] - a[..., axis]) / step[..., axis]
        tb = (half[..., axis] - a[..., axis]) / step[..., axis]
        t0 = np.maximum(t0, np.minimum(ta, tb))
        t1 = np.minimum(t1, np.maximum(ta, tb))
    return t0 <= t1


class _Placer:
    """Samples objects into a layout, rejecting any that would overlap an accepted object or the ego."""

    def __init__(self, rng, layout):
        self.rng = rng
        self.layout = layout
        self.t_mid = float(np.mean(layout.times[layout.key_frames]))
        self.s_ego_mid = float(layout.road.to_road(self._ego_xy_mid())[0])
        ego = layout.ego
        self.ego_centre = ego[:, :2] + EGO_CENTRE_X * np.stack([np.cos(ego[:, 2]), np.sin(ego[:, 2])], -1)
        self.ego_half = np.array([EGO_LENGTH / 2 + EGO_GAP, EGO_WIDTH / 2 + EGO_GAP])
        self.halves = np.zeros((0, 2))
        # Sight lines from the LiDAR at the middle key frame to the guaranteed objects: nothing may block them.
        self.t_sight = layout.key_frames[len(layout.key_frames) // 2]
        pose = ego[self.t_sight]
        self.sensor_xy = pose[:2] + LIDAR_X * np.array([np.cos(pose[2]), np.sin(pose[2])])
        self.sight_targets = np.zeros((0, 2))

    def _ego_xy_mid(self):
        lay = self.layout
        return np.array([np.interp(self.t_mid, lay.times, lay.ego[:, i]) for i in range(2)])

    def road_track(self, s_mid, d, speed, direction, yaw_offset=0.0):
        times = self.layout.times
        s = s_mid + direction * speed * self.layout.road.lane_speed_factor(d) * (times - self.t_mid)
        xy, theta = self.layout.road.to_world(s, np.full_like(s, d))
        return np.column_stack([xy, theta + (0.0 if direction > 0 else np.pi) + yaw_offset])

    def straight_track(self, s_mid, d, heading, speed):
        xy_mid, theta = self.layout.road.to_world(s_mid, d)
        yaw = float(theta) + heading
        dt = self.layout.times - self.t_mid
        xy = xy_mid + speed * dt[:, None] * np.array([np.cos(yaw), np.sin(yaw)])
        return np.column_stack([xy, np.full(len(dt), yaw)])

    def try_add(self, name, category, size, poses, attribute, in_sight=False):
        """Adds the object unless it overlaps the ego or another object, or blocks a sight line; ``in_sight`` adds
        a sight line to it, which must be clear of the objects already there."""
        half = np.array([size[0] / 2 + OBJECT_GAP / 2, size[1] / 2 + OBJECT_GAP / 2])
        if _footprints_overlap(self.ego_centre, self.layout.ego[:, 2], self.ego_half,
                               poses[:, :2], poses[:, 2], half).any():
            return False
        pose = poses[self.t_sight]
        if _segments_cross_footprints(self.sensor_xy, self.sight_targets, pose[:2], pose[2], half).any():
            return False
        if self.layout.poses:
            others = np.stack(self.layout.poses)
            if _footprints_overlap(others[:, :, :2], others[:, :, 2], self.halves[:, None, :],
                                   poses[None, :, :2], poses[None, :, 2], half).any():
                return False
            if in_sight and _segments_cross_footprints(self.sensor_xy, pose[:2], others[:, self.t_sight, :2],
                                                       others[:, self.t_sight, 2], self.halves).any():
                return False
        if in_sight:
            self.sight_targets = np.vstack([self.sight_targets, pose[:2]])
        cls = OBJECT_CLASSES[name]
        hue = (cls.hue + self.rng.uniform(-4, 4)) % 360 / 360.0
        sat = float(np.clip(cls.saturation * self.rng.uniform(0.85, 1.05), 0, 1))
        colour = colorsys.hsv_to_rgb(hue, sat, self.rng.uniform(0.72, 0.95))
        lay = self.layout
        lay.names.append(name)
        lay.categories.append(category)
        lay.attributes.append(attribute)
        lay.sizes.append(np.asarray(size, dtype=np.float64))
        lay.colours.append(np.array(colour))
        lay.poses.append(poses)
        self.halves = np.vstack([self.halves, half])
        return True


def _attribute(name, mode, speed):
    if name in VEHICLES:
        if speed > 0:
            return "vehicle.moving"
        return "vehicle.stopped" if mode == "lane" or name == "bus" else "vehicle.parked"
    if name in CYCLES:
        return "cycle.with_rider" if mode in ("lane", "bike_lane") or speed > 0 else "cycle.without_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if speed > 0 else "pedestrian.standing"
    return None


def _lateral(rng, mode):
    """Lateral offset ``d`` for a placement mode; also the travel direction along the road (+1 with the ego)."""
    side = rng.choice([0, 1])
    if mode == "lane":
        lane = rng.choice(R.SAME_DIRECTION_LANES + R.ONCOMING_LANES)
        d = lane + rng.uniform(-0.3, 0.3)
    elif mode == "bike_lane":
        d = R.ROAD_EDGES[0] + rng.uniform(0.6, 1.0)
    elif mode == "lane_edge":
        d = rng.choice(R.DASHED_LINES + R.ROAD_EDGES) + rng.uniform(-0.5, 0.5)
    elif mode == "strip":
        lo, hi = R.PARKING_STRIPS[side]
        d = (lo + hi) / 2 + rng.uniform(-0.2, 0.2)
    elif mode == "sidewalk":
        lo, hi = R.SIDEWALKS[side]
        d = rng.uniform(lo + 0.5, hi - 0.5)
    elif mode == "crossing":
        d = rng.uniform(R.ROAD_EDGES[0] - 2.0, R.ROAD_EDGES[1] + 2.0)
    else:  # "open"
        d = (1 if side else -1) * rng.uniform(*R.OPEN_AREA)
    direction = 1 if d < R.LANE_CENTRE_LINE else -1
    if mode in ("sidewalk", "open") or (mode == "strip" and rng.uniform() < 0.1):
        direction = rng.choice([-1, 1])
    return float(d), int(direction)


def _sample_size(rng, name):
    variants = OBJECT_CLASSES[name].variants
    weights = np.array([v[1] for v in variants])
    category, _, size = variants[rng.choice(len(variants), p=weights / weights.sum())]
    jitter = 0.1 if name in VEHICLES else 0.08
    return category, np.asarray(size) * rng.uniform(1 - jitter, 1 + jitter, 3)


def _place(placer, name, guaranteed):
    """Samples one object (or one row of cones/barriers) of class ``name``; returns how many were accepted."""
    rng = placer.rng
    if guaranteed:
        # Static, at the kerb and well inside the evaluation range, so that every scene holds every class where the
        # LiDAR sees it (a sidewalk is often hidden behind parked cars).
        mode, speed_range = "strip", None
        delta = rng.choice([-1, 1]) * rng.uniform(4.0, 0.55 * EVAL_RANGE[name])
    else:
        modes = PLACEMENT_MODES[name]
        probs = np.array([m[1] for m in modes])
        mode, _, speed_range = modes[rng.choice(len(modes), p=probs / probs.sum())]
        reach = min(EVAL_RANGE.get(name, 40.0) + 2.0, 48.0)
        delta = rng.uniform(-reach, reach)
    speed = float(rng.uniform(*speed_range)) if speed_range else 0.0
    d, direction = _lateral(rng, mode)
    s_mid = placer.s_ego_mid + delta
    count, spacing_range = (rng.integers(ROWS[name][0][0], ROWS[name][0][1] + 1), ROWS[name][1]) \
        if name in ROWS and not guaranteed else (1, None)
    category, size = _sample_size(rng, name)
    spacing = rng.uniform(*spacing_range) if spacing_range else size[1] + OBJECT_GAP + 0.05
    accepted = 0
    for i in range(count):
        if name == "barrier":
            yaw_offset = np.pi / 2 + rng.uniform(-0.03, 0.03)  # the long side (width) runs along the road
        elif name in ("traffic_cone", "pushable_pullable"):
            yaw_offset = rng.uniform(-np.pi, np.pi)
        elif mode == "open":
            yaw_offset = rng.integers(4) * np.pi / 2 + rng.uniform(-0.2, 0.2)
        else:
            yaw_offset = rng.uniform(-0.05, 0.05)
        s_i = s_mid + i * spacing
        if mode == "crossing":
            poses = placer.straight_track(s_i, d, rng.choice([-1, 1]) * np.pi / 2 + rng.uniform(-0.3, 0.3), speed)
        elif mode == "open" and speed > 0:
            poses = placer.straight_track(s_i, d, rng.uniform(-np.pi, np.pi), speed)
        else:
            poses = placer.road_track(s_i, d, speed, direction, yaw_offset)
        accepted += placer.try_add(name, category, size, poses, _attribute(name, mode, speed), guaranteed)
    return accepted


def sample_layout(rng, frames, sweeps, max_tries=12):
    """A random scene: ego drive plus objects. Every detection class gets one guaranteed static instance near the
    ego; the rest follow the per-scene frequencies of ``OBJECT_CLASSES``."""
    times, key_frames, sweep_frames = time_grid(frames, sweeps)
    curvature = rng.uniform(-0.01, 0.01)
    road = R.RoadFrame(rng.uniform(300.0, 1700.0, 2), rng.uniform(-np.pi, np.pi),
                       0.0 if abs(curvature) < 1e-4 else curvature)
    ego_speed = rng.uniform(3.0, 8.0)
    xy, theta = road.to_world(ego_speed * times, np.zeros_like(times))
    layout = SceneLayout(road, times, key_frames, sweep_frames, np.column_stack([xy, theta]), ego_speed)
    placer = _Placer(rng, layout)
    for name in DETECTION_CLASSES:
        for _ in range(4 * max_tries):  # no class may go missing
            if _place(placer, name, guaranteed=True):
                break
    # Large objects first: they are the hardest to fit between the others.
    order = sorted(OBJECT_CLASSES, key=lambda n: -np.prod(OBJECT_CLASSES[n].variants[0][2][:2]))
    for name in order:
        for _ in range(rng.poisson(OBJECT_CLASSES[name].per_scene)):
            for _ in range(max_tries):
                if _place(placer, name, guaranteed=False):
                    break
    return layout
