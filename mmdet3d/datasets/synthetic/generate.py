"""Generates a nuScenes-format dataset: scenes are independent jobs (a process pool shares them out), each writes
its images and point clouds; the main process writes the tables, the map and the split file."""
import datetime
import json
import multiprocessing
import os
import shutil
import time

import numpy as np
from nuscenes.utils import splits as nusc_splits
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from PIL import Image
from pyquaternion import Quaternion
from tqdm import tqdm

from .catalogue import DETECTION_CLASSES, EVAL_RANGE, OBJECT_CLASSES, visibility_token
from .lidar import LidarRenderer
from .raycast import world_to_ego_boxes
from .render import PLAIN, TRAILER, VEHICLE, CameraRenderer
from .rig import build_rig
from .scene import VEHICLES, sample_layout
from .tables import VEHICLE_NAME, TableBuilder, box_values, ego_pose_values, token

DEFAULT_IMAGE_SIZE = (180, 320)
DEFAULT_FRAMES = 10
DEFAULT_SWEEPS = 2
AZIMUTH_STEP_DEG = 0.6
ANNOTATION_RANGE = 80.0  # m; an instance is annotated from the first to the last key frame it is this close
MAX_ATTEMPTS = 20        # layouts tried per scene until every detection class is in range with LiDAR points
MIN_IMAGE_SIDE = 32
MAX_SWEEPS = 9           # 20 Hz sweeps fit 9 between 2 Hz key frames
JPEG_QUALITY = 90
START_TIME = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
SCENE_SPACING_US = 20 * 60 * 1_000_000
SPLIT_NAMES = ("synthetic_train", "synthetic_val")  # the keys of splits.json (train, val)


def scene_names(version, scenes):
    """(names, splits or None): the ten v1.0-mini names for a 10-scene mini version (the devkit's mini_train /
    mini_val then apply); otherwise scene-0001... with a ~80/20 split for ``splits.json``. Its keys must not be
    names the devkit predefines ('train', 'val', ...), or the devkit would use its own scene lists instead."""
    if version.endswith("mini") and scenes == 10:
        return sorted(nusc_splits.mini_train + nusc_splits.mini_val), None
    names = [f"scene-{i + 1:04d}" for i in range(scenes)]
    n_val = max(1, int(round(0.2 * scenes)))
    return names, {SPLIT_NAMES[0]: names[:-n_val], SPLIT_NAMES[1]: names[-n_val:]}


def _check_args(out_dir, version, seed, scenes, frames_per_scene, image_size, sweeps):
    if not isinstance(version, str) or not version.startswith("v1.0-") or os.sep in version:
        raise ValueError(f"version must look like 'v1.0-mini' or 'v1.0-trainval', got {version!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if scenes < 2:
        raise ValueError(f"scenes must be >= 2 (at least one train and one val scene), got {scenes}")
    if frames_per_scene < 1:
        raise ValueError(f"frames_per_scene must be >= 1, got {frames_per_scene}")
    if len(image_size) != 2 or min(image_size) < MIN_IMAGE_SIDE:
        raise ValueError(f"image_size (H, W) must have both sides >= {MIN_IMAGE_SIDE}, got {tuple(image_size)}")
    if not 0 <= sweeps <= MAX_SWEEPS:
        raise ValueError(f"sweeps must be in [0, {MAX_SWEEPS}] (20 Hz sweeps between 2 Hz key frames), got {sweeps}")
    if os.path.isfile(out_dir):
        raise ValueError(f"out_dir {out_dir} is a file")


def devkit_point_count(points, translation, size, rotation, ego_translation, ego_rotation, lidar):
    """``num_lidar_pts`` the way the devkit counts it: the annotation's box moved into the LiDAR frame as
    ``NuScenes.get_sample_data`` does, then ``points_in_box`` on the stored float32 points ``[P, >=3]``."""
    box = Box(translation, size, Quaternion(rotation))
    box.translate(-np.array(ego_translation))
    box.rotate(Quaternion(ego_rotation).inverse)
    box.translate(-np.array(lidar.translation))
    box.rotate(Quaternion(lidar.rotation).inverse)
    # Only points within the box's bounding sphere can be inside; the test is per point, so the count is the same.
    near = ((points[:, :3] - box.center) ** 2).sum(1) <= (np.linalg.norm(box.wlh) / 2 + 0.1) ** 2
    return int(points_in_box(box, points[near, :3].T).sum())


def _style(name):
    return TRAILER if name == "trailer" else VEHICLE if name in VEHICLES else PLAIN


def _annotate(layout, key_scans, lidar):
    """Per key frame the annotated objects with their record values and devkit point counts."""
    keys = layout.key_frames
    ego_xy = layout.ego[keys, :2]
    centres = np.stack(layout.poses)[:, keys, :2] if layout.poses else np.zeros((0, len(keys), 2))
    near = np.linalg.norm(centres - ego_xy[None], axis=-1) <= ANNOTATION_RANGE
    per_frame = [[] for _ in keys]
    for obj in range(len(layout.names)):
        frames = np.flatnonzero(near[obj])
        if not len(frames):
            continue
        for k in range(frames[0], frames[-1] + 1):
            translation, size, rotation = box_values(layout.boxes(keys[k])[obj])
            ego_t, ego_r = ego_pose_values(layout.ego[keys[k]])
            per_frame[k].append({"object": obj, "translation": translation, "size": size, "rotation": rotation,
                                 "num_lidar_pts": devkit_point_count(key_scans[k], translation, size, rotation,
                                                                     ego_t, ego_r, lidar)})
    return per_frame


def _evaluable(annotations, names, ego_xy):
    """Class names of the boxes the devkit evaluates (detection class, in its range, with LiDAR points), one per box;
    ``ego_xy[k]`` is the ego position at key frame ``k``."""
    out = []
    for k, anns in enumerate(annotations):
        for ann in anns:
            name = names[ann["object"]]
            if name in EVAL_RANGE and ann["num_lidar_pts"] > 0 and \
                    np.hypot(*(np.array(ann["translation"][:2]) - ego_xy[k])) < EVAL_RANGE[name]:
                out.append(name)
    return out


def _rng(seed, index, attempt, *stream):
    return np.random.default_rng([seed, index, attempt, *stream])


def _scan(lidar, layout, t, salt, rng):
    boxes = world_to_ego_boxes(layout.boxes(t), layout.ego[t])
    reflectivity = np.array([OBJECT_CLASSES[n].reflectivity for n in layout.names])
    return lidar.scan(boxes, reflectivity, layout.ego[t], layout.road, salt, rng)


def _choose_layout(seed, index, frames, sweeps, lidar, lidar_sensor):
    """The first layout (attempt 0, 1, ...) whose key frames show every detection class within its evaluation range
    with LiDAR points; with its key-frame scans and annotations."""
    for attempt in range(MAX_ATTEMPTS):
        rng = _rng(seed, index, attempt, 0)
        layout = sample_layout(rng, frames, sweeps)
        salt = int(rng.integers(1 << 31))
        key_scans = [_scan(lidar, layout, t, salt, _rng(seed, index, attempt, 1, t)) for t in layout.key_frames]
        annotations = _annotate(layout, key_scans, lidar_sensor)
        evaluable = _evaluable(annotations, layout.names, layout.ego[layout.key_frames, :2])
        if set(evaluable) == set(DETECTION_CLASSES):
            return layout, attempt, salt, key_scans, annotations, evaluable
    raise RuntimeError(f"scene {index}: no layout in {MAX_ATTEMPTS} attempts had every class in range with LiDAR "
                       f"points")


def _write_cameras(root, layout, k, renderers, salt, rng_of, log_name, timestamp):
    """Renders and writes the six images of key frame ``k``; returns (files, bytes, visible fraction per object)."""
    t = layout.key_frames[k]
    boxes = world_to_ego_boxes(layout.boxes(t), layout.ego[t])
    colours = np.array(layout.colours).reshape(-1, 3)
    styles = np.array([_style(n) for n in layout.names], dtype=np.int64)
    silhouette = np.zeros(len(boxes), dtype=np.int64)
    visible = np.zeros(len(boxes), dtype=np.int64)
    files, nbytes = {}, 0
    for c, renderer in enumerate(renderers):
        image, sil, vis = renderer.render(boxes, colours, styles, layout.ego[t], layout.road, salt, rng_of(c))
        silhouette += sil
        visible += vis
        rel = f"samples/{renderer.channel}/{log_name}__{renderer.channel}__{timestamp}.jpg"
        files[renderer.channel] = rel
        Image.fromarray(image).save(os.path.join(root, rel), quality=JPEG_QUALITY, subsampling=0)
        nbytes += os.path.getsize(os.path.join(root, rel))
    return files, nbytes, np.where(silhouette > 0, visible / np.maximum(silhouette, 1), 0.0)


def build_scene(job):
    """Generates, renders and writes one scene; returns what the tables need (see ``TableBuilder.add_scene``)."""
    root, seed, index, name, frames, sweeps, image_size = job
    lidar_sensor, cameras = build_rig(image_size)
    lidar = LidarRenderer(lidar_sensor, AZIMUTH_STEP_DEG)
    layout, attempt, salt, key_scans, annotations, evaluable = _choose_layout(seed, index, frames, sweeps, lidar,
                                                                               lidar_sensor)
    start_us = int((START_TIME.timestamp() + (seed % 1000) * 86400) * 1e6) + index * SCENE_SPACING_US
    log_name = VEHICLE_NAME + datetime.datetime.fromtimestamp(start_us / 1e6, datetime.timezone.utc).strftime(
        "-%Y-%m-%d-%H-%M-%S+0000")
    timestamps = [start_us + int(round(t * 1e6)) for t in layout.times]

    nbytes = 0
    lidar_files = {}
    key_index = {int(t): k for k, t in enumerate(layout.key_frames)}
    for t in range(len(layout.times)):
        if t in key_index:
            rel, points = f"samples/LIDAR_TOP/{log_name}__LIDAR_TOP__{timestamps[t]}.pcd.bin", key_scans[key_index[t]]
        else:
            rel = f"sweeps/LIDAR_TOP/{log_name}__LIDAR_TOP__{timestamps[t]}.pcd.bin"
            points = _scan(lidar, layout, t, salt, _rng(seed, index, attempt, 1, t))
        points.tofile(os.path.join(root, rel))
        nbytes += points.nbytes
        lidar_files[t] = rel

    renderers = [CameraRenderer(cam, image_size) for cam in cameras]
    camera_files = []
    for k, t in enumerate(layout.key_frames):
        files, size, visible = _write_cameras(root, layout, k, renderers, salt,
                                              lambda c: _rng(seed, index, attempt, 2, t, c), log_name, timestamps[t])
        camera_files.append(files)
        nbytes += size
        for ann in annotations[k]:
            ann["visibility"] = visibility_token(visible[ann["object"]])

    return {
        "index": index, "name": name, "log_name": log_name, "date": log_name[5:15],
        "description": f"synthetic; ego {layout.ego_speed:.1f} m/s on a road of curvature {layout.road.curvature:+.4f}"
                       f" 1/m; {len(layout.names)} objects",
        "key_frames": [int(t) for t in layout.key_frames],
        "sweep_frames": [[int(t) for t in s] for s in layout.sweep_frames],
        "timestamps": timestamps,
        "ego_values": [ego_pose_values(p) for p in layout.ego],
        "objects": [{"name": n, "category": c, "attribute": a}
                    for n, c, a in zip(layout.names, layout.categories, layout.attributes)],
        "annotations": annotations, "lidar_files": lidar_files, "camera_files": camera_files,
        "image_size": tuple(image_size), "bytes": nbytes, "evaluable": evaluable,
    }


def _prepare(out_dir, version, overwrite, cameras):
    existing = [p for p in (os.path.join(out_dir, version), os.path.join(out_dir, "samples"),
                            os.path.join(out_dir, "sweeps")) if os.path.isdir(p) and os.listdir(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists and is not empty; choose an empty out_dir "
                              f"or pass overwrite=True (--overwrite)")
    for sub in (version, "samples", "sweeps", "maps"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    for channel in [c.channel for c in cameras] + ["LIDAR_TOP"]:
        os.makedirs(os.path.join(out_dir, "samples", channel), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "sweeps", "LIDAR_TOP"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "maps"), exist_ok=True)


def generate(out_dir, version="v1.0-mini", seed=0, scenes=10, frames_per_scene=DEFAULT_FRAMES,
             image_size=DEFAULT_IMAGE_SIZE, sweeps=DEFAULT_SWEEPS, workers=None, overwrite=False, progress=True):
    """Writes a nuScenes-format dataset to ``out_dir`` and returns a summary dict (samples, boxes, bytes, seconds,
    splits, evaluable val boxes per class). Same arguments, same bytes."""
    start = time.time()
    image_size = tuple(int(v) for v in image_size)
    _check_args(out_dir, version, seed, scenes, frames_per_scene, image_size, sweeps)
    names, splits = scene_names(version, scenes)
    lidar, cameras = build_rig(image_size)
    _prepare(out_dir, version, overwrite, cameras)
    jobs = [(out_dir, int(seed), i, names[i], frames_per_scene, sweeps, image_size) for i in range(scenes)]
    workers = min(scenes, os.cpu_count() or 1, 2) if workers is None else max(1, int(workers))
    val_names = set(splits[SPLIT_NAMES[1]] if splits else nusc_splits.mini_val)

    builder = TableBuilder(int(seed), lidar, cameras)
    val_counts = {name: 0 for name in DETECTION_CLASSES}
    nbytes = 0
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(build_scene, jobs) if pool else map(build_scene, jobs)
        with tqdm(total=scenes * frames_per_scene, unit="frame", desc=f"generating {version}",
                  disable=not progress) as bar:
            for scene in results:
                builder.add_scene(scene)
                nbytes += scene["bytes"]
                if scene["name"] in val_names:
                    for name in scene["evaluable"]:
                        val_counts[name] += 1
                bar.update(frames_per_scene)
    finally:
        if pool:  # every result is in by now, unless a scene failed: then stop the others
            pool.terminate()
            pool.join()

    map_file = f"maps/{token(int(seed), 'map')}.png"
    Image.new("L", (64, 64), 128).save(os.path.join(out_dir, map_file))
    folder = builder.write(out_dir, version, map_file)
    if splits:
        with open(os.path.join(folder, "splits.json"), "w") as f:
            json.dump(splits, f, indent=1)
    nbytes += sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    nbytes += os.path.getsize(os.path.join(out_dir, map_file))
    tables = builder.tables
    return {
        "out_dir": out_dir, "version": version, "seed": int(seed), "scenes": scenes,
        "samples": len(tables["sample"]),
        "sweeps": sum(not r["is_key_frame"] for r in tables["sample_data"]),
        "boxes": len(tables["sample_annotation"]), "instances": len(tables["instance"]),
        "train_scenes": sorted(splits[SPLIT_NAMES[0]] if splits else nusc_splits.mini_train),
        "val_scenes": sorted(val_names), "val_boxes_per_class": val_counts,
        "bytes": nbytes, "seconds": time.time() - start,
    }
