"""Builds BEVFusion-style info files (``nuscenes_infos_{train,val}.pkl``) from a nuScenes-format dataset.

Works the same for real nuScenes and for the generated dataset: everything is read through the devkit. File paths
are stored relative to the dataset root (the dataset joins them with its ``dataset_root``).
"""
import json
import os
import pickle

import numpy as np
from nuscenes import NuScenes
from nuscenes.utils import splits as nusc_splits
from tqdm import tqdm

from mmdet3d.core.boxes import boxes_to_legacy, transform_matrix

CAMERA_ORDER = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]

NAME_MAPPING = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}


def split_scene_names(nusc, version):
    """(train scene names, val scene names, val split name). A ``splits.json`` beside the tables wins: it holds one
    key ending in ``train`` and one ending in ``val`` (names the devkit does not predefine)."""
    custom = os.path.join(nusc.dataroot, version, "splits.json")
    if os.path.isfile(custom):
        with open(custom) as f:
            splits = json.load(f)
        train_keys = [k for k in splits if k.endswith("train")]
        val_keys = [k for k in splits if k.endswith("val")]
        if len(train_keys) != 1 or len(val_keys) != 1:
            raise ValueError(f"{custom}: expected exactly one key ending in 'train' and one ending in 'val', "
                             f"got {sorted(splits)}")
        return splits[train_keys[0]], splits[val_keys[0]], val_keys[0]
    predefined = nusc_splits.create_splits_scenes()
    if version.endswith("mini"):
        return predefined["mini_train"], predefined["mini_val"], "mini_val"
    if version.endswith("trainval"):
        return predefined["train"], predefined["val"], "val"
    if version.endswith("test"):
        return [], predefined["test"], "test"
    raise ValueError(f"unknown nuScenes version '{version}' (expected *-mini, *-trainval or *-test)")


def _pose(nusc, sd_rec):
    """sensor2ego and ego2global 4x4 matrices of one sample_data record."""
    cs = nusc.get("calibrated_sensor", sd_rec["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd_rec["ego_pose_token"])
    return cs, pose, transform_matrix(cs["translation"], cs["rotation"]), \
        transform_matrix(pose["translation"], pose["rotation"])


def sensor_record(nusc, sd_token, lidar2ego, ego2global, sensor_type):
    """One camera or sweep entry with its transform into the key-frame LiDAR frame (``p_lidar = R p + T``)."""
    sd_rec = nusc.get("sample_data", sd_token)
    cs, pose, sensor2ego, sensor_ego2global = _pose(nusc, sd_rec)
    sensor2lidar = np.linalg.inv(lidar2ego) @ np.linalg.inv(ego2global) @ sensor_ego2global @ sensor2ego
    return {
        "data_path": sd_rec["filename"],
        "type": sensor_type,
        "sample_data_token": sd_token,
        "sensor2ego_translation": cs["translation"],
        "sensor2ego_rotation": cs["rotation"],
        "ego2global_translation": pose["translation"],
        "ego2global_rotation": pose["rotation"],
        "timestamp": sd_rec["timestamp"],
        "sensor2lidar_rotation": sensor2lidar[:3, :3],
        "sensor2lidar_translation": sensor2lidar[:3, 3],
    }


def sample_info(nusc, sample, max_sweeps, with_annotations):
    lidar_token = sample["data"]["LIDAR_TOP"]
    lidar_rec = nusc.get("sample_data", lidar_token)
    cs, pose, lidar2ego, ego2global = _pose(nusc, lidar_rec)
    lidar_path = lidar_rec["filename"]
    if not os.path.isfile(os.path.join(nusc.dataroot, lidar_path)):
        raise FileNotFoundError(f"LiDAR file of sample {sample['token']} not found: "
                                f"{os.path.join(nusc.dataroot, lidar_path)}")
    scene = nusc.get("scene", sample["scene_token"])
    info = {
        "lidar_path": lidar_path,
        "token": sample["token"],
        "sweeps": [],
        "cams": {},
        "lidar2ego_translation": cs["translation"],
        "lidar2ego_rotation": cs["rotation"],
        "ego2global_translation": pose["translation"],
        "ego2global_rotation": pose["rotation"],
        "timestamp": sample["timestamp"],
        "location": nusc.get("log", scene["log_token"])["location"],
        "scene_token": sample["scene_token"],
        "prev": sample["prev"],  # the previous key frame's token, "" at the start of a scene
    }
    for cam in CAMERA_ORDER:
        if cam not in sample["data"]:
            raise ValueError(f"sample {sample['token']} has no {cam} image")
        record = sensor_record(nusc, sample["data"][cam], lidar2ego, ego2global, cam)
        record["camera_intrinsics"] = np.array(
            nusc.get("calibrated_sensor", nusc.get("sample_data", sample["data"][cam])["calibrated_sensor_token"])
            ["camera_intrinsic"])
        info["cams"][cam] = record

    prev = lidar_rec["prev"]
    while prev and len(info["sweeps"]) < max_sweeps:
        info["sweeps"].append(sensor_record(nusc, prev, lidar2ego, ego2global, "lidar"))
        prev = nusc.get("sample_data", prev)["prev"]

    if with_annotations:
        annotations = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        _, boxes, _ = nusc.get_sample_data(lidar_token)
        global2lidar = np.linalg.inv(ego2global @ lidar2ego)
        ours = np.zeros((len(boxes), 9))
        for i, box in enumerate(boxes):
            velocity = nusc.box_velocity(box.token)
            local_velocity = global2lidar[:3, :3] @ np.nan_to_num(velocity, nan=0.0)
            if np.any(np.isnan(velocity[:2])):
                local_velocity[:2] = np.nan
            ours[i, :3] = box.center
            ours[i, 3:6] = box.wlh[1], box.wlh[0], box.wlh[2]
            ours[i, 6] = box.orientation.yaw_pitch_roll[0]
            ours[i, 7:9] = local_velocity[:2]
        info["gt_boxes"] = boxes_to_legacy(ours).reshape(-1, 7)
        info["gt_names"] = np.array([NAME_MAPPING.get(b.name, b.name) for b in boxes])
        info["gt_velocity"] = ours[:, 7:9].reshape(-1, 2)
        info["num_lidar_pts"] = np.array([a["num_lidar_pts"] for a in annotations])
        info["num_radar_pts"] = np.array([a["num_radar_pts"] for a in annotations])
        info["valid_flag"] = (info["num_lidar_pts"] + info["num_radar_pts"]) > 0
    return info


def _write(path, infos, version):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump({"infos": infos, "metadata": {"version": version}}, f)
    os.replace(tmp, path)


def create_nuscenes_infos(root_path, version, out_dir=None, max_sweeps=10, info_prefix="nuscenes"):
    """Writes ``{out_dir}/{info_prefix}_infos_{train,val}.pkl`` (or ``_test``); returns their paths and sizes."""
    if not os.path.isdir(os.path.join(root_path, version)):
        raise FileNotFoundError(f"no nuScenes tables at {os.path.join(root_path, version)}")
    out_dir = out_dir or root_path
    os.makedirs(out_dir, exist_ok=True)
    nusc = NuScenes(version=version, dataroot=root_path, verbose=False)
    train_names, val_names, _ = split_scene_names(nusc, version)
    train_names, val_names = set(train_names), set(val_names)
    is_test = version.endswith("test")
    train, val = [], []
    for sample in tqdm(nusc.sample, desc=f"converting {version}", unit="sample"):
        scene_name = nusc.get("scene", sample["scene_token"])["name"]
        if scene_name not in train_names and scene_name not in val_names:
            continue
        info = sample_info(nusc, sample, max_sweeps, with_annotations=not is_test)
        (train if scene_name in train_names else val).append(info)
    train.sort(key=lambda i: i["timestamp"])
    val.sort(key=lambda i: i["timestamp"])
    written = {}
    if is_test:
        written["test"] = (os.path.join(out_dir, f"{info_prefix}_infos_test.pkl"), len(val))
        _write(written["test"][0], val, version)
    else:
        written["train"] = (os.path.join(out_dir, f"{info_prefix}_infos_train.pkl"), len(train))
        written["val"] = (os.path.join(out_dir, f"{info_prefix}_infos_val.pkl"), len(val))
        _write(written["train"][0], train, version)
        _write(written["val"][0], val, version)
    return written
