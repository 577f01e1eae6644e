"""The 13 nuScenes tables of a generated dataset. Tokens are md5 hashes of what a record is (seed, scene, channel,
frame), so the same arguments give byte-identical tables."""
import hashlib
import json
import os

import numpy as np

from .catalogue import ATTRIBUTES, CATEGORIES, VISIBILITIES

TABLE_NAMES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
               "scene", "sample", "sample_data", "sample_annotation", "map")
LOCATION = "synthetic-town"
VEHICLE_NAME = "n900"


def token(*parts):
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def yaw_quaternion(yaw):
    """``(w, x, y, z)`` of a rotation by ``yaw`` about +z, as plain floats."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def ego_pose_values(pose):
    """``(translation, rotation)`` of an ego pose record for world ``(x, y, yaw)``."""
    return [float(pose[0]), float(pose[1]), 0.0], yaw_quaternion(pose[2])


def box_values(box):
    """``(translation, size wlh, rotation)`` of a sample_annotation for a world box ``(x, y, z, l, w, h, yaw)``."""
    return [float(v) for v in box[:3]], [float(box[4]), float(box[3]), float(box[5])], yaw_quaternion(box[6])


class TableBuilder:
    """Collects the records of all scenes; ``scene`` dicts come from ``generate.build_scene``."""

    def __init__(self, seed, lidar, cameras):
        self.seed = seed
        self.sensors = [lidar] + list(cameras)
        self.tables = {name: [] for name in TABLE_NAMES}
        self.tables["category"] = [{"token": token("category", name), "name": name, "description": desc,
                                    "index": i} for i, (name, desc) in enumerate(CATEGORIES)]
        self.tables["attribute"] = [{"token": token("attribute", name), "name": name, "description": desc}
                                    for name, desc in ATTRIBUTES]
        self.tables["visibility"] = [{"token": tok, "level": level, "description": desc}
                                     for tok, level, desc, _ in VISIBILITIES]
        self.tables["sensor"] = [{"token": token("sensor", s.channel), "channel": s.channel,
                                  "modality": "lidar" if s.intrinsic is None else "camera"} for s in self.sensors]
        self.category_token = {r["name"]: r["token"] for r in self.tables["category"]}
        self.attribute_token = {r["name"]: r["token"] for r in self.tables["attribute"]}

    def _tok(self, *parts):
        return token(self.seed, *parts)

    def add_scene(self, scene):
        i = scene["index"]
        log_token = self._tok("log", i)
        self.tables["log"].append({"token": log_token, "logfile": scene["log_name"], "vehicle": VEHICLE_NAME,
                                   "date_captured": scene["date"], "location": LOCATION})
        cs_token = {}
        for s in self.sensors:
            cs_token[s.channel] = self._tok("calibrated_sensor", i, s.channel)
            self.tables["calibrated_sensor"].append({
                "token": cs_token[s.channel], "sensor_token": token("sensor", s.channel),
                "translation": [float(v) for v in s.translation], "rotation": [float(v) for v in s.rotation],
                "camera_intrinsic": [] if s.intrinsic is None else s.intrinsic.tolist()})

        keys = scene["key_frames"]
        sample_tokens = [self._tok("sample", i, k) for k in range(len(keys))]
        scene_token = self._tok("scene", i)
        self.tables["scene"].append({
            "token": scene_token, "log_token": log_token, "nbr_samples": len(keys),
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
            "name": scene["name"], "description": scene["description"]})
        for k, tok in enumerate(sample_tokens):
            self.tables["sample"].append({
                "token": tok, "timestamp": scene["timestamps"][keys[k]], "prev": sample_tokens[k - 1] if k else "",
                "next": sample_tokens[k + 1] if k + 1 < len(keys) else "", "scene_token": scene_token})

        # LiDAR: every instant (sweeps and key frames) in one chain; a sweep belongs to the next key frame's sample.
        owner_sample = {}
        for k, t in enumerate(keys):
            owner_sample[t] = k
            for ts in scene["sweep_frames"][k]:
                owner_sample[ts] = k
        lidar_times = sorted(scene["lidar_files"])
        self._chain(i, "LIDAR_TOP", lidar_times, scene, cs_token["LIDAR_TOP"],
                    [sample_tokens[owner_sample[t]] for t in lidar_times], [t in set(keys) for t in lidar_times],
                    [scene["lidar_files"][t] for t in lidar_times], "pcd", (0, 0))
        for cam in self.sensors[1:]:
            self._chain(i, cam.channel, list(keys), scene, cs_token[cam.channel], sample_tokens, [True] * len(keys),
                        [scene["camera_files"][k][cam.channel] for k in range(len(keys))], "jpg",
                        scene["image_size"])
        self._annotations(i, scene, sample_tokens)

    def _chain(self, i, channel, times, scene, cs_token, samples, key_flags, files, fileformat, size):
        tokens = [self._tok("sample_data", i, channel, t) for t in times]
        for j, t in enumerate(times):
            pose_token = self._tok("ego_pose", i, channel, t)
            translation, rotation = scene["ego_values"][t]
            self.tables["ego_pose"].append({"token": pose_token, "timestamp": scene["timestamps"][t],
                                            "rotation": rotation, "translation": translation})
            self.tables["sample_data"].append({
                "token": tokens[j], "sample_token": samples[j], "ego_pose_token": pose_token,
                "calibrated_sensor_token": cs_token, "timestamp": scene["timestamps"][t], "fileformat": fileformat,
                "is_key_frame": bool(key_flags[j]), "height": int(size[0]), "width": int(size[1]),
                "filename": files[j], "prev": tokens[j - 1] if j else "",
                "next": tokens[j + 1] if j + 1 < len(times) else ""})

    def _annotations(self, i, scene, sample_tokens):
        by_object = {}
        for k, anns in enumerate(scene["annotations"]):
            for ann in anns:
                by_object.setdefault(ann["object"], []).append((k, ann))
        for obj in sorted(by_object):
            instance_token = self._tok("instance", i, obj)
            frames = by_object[obj]
            tokens = [self._tok("sample_annotation", i, obj, k) for k, _ in frames]
            meta = scene["objects"][obj]
            self.tables["instance"].append({
                "token": instance_token, "category_token": self.category_token[meta["category"]],
                "nbr_annotations": len(frames), "first_annotation_token": tokens[0],
                "last_annotation_token": tokens[-1]})
            attribute = [self.attribute_token[meta["attribute"]]] if meta["attribute"] else []
            for j, (k, ann) in enumerate(frames):
                self.tables["sample_annotation"].append({
                    "token": tokens[j], "sample_token": sample_tokens[k], "instance_token": instance_token,
                    "visibility_token": ann["visibility"], "attribute_tokens": attribute,
                    "translation": ann["translation"], "size": ann["size"], "rotation": ann["rotation"],
                    "prev": tokens[j - 1] if j else "", "next": tokens[j + 1] if j + 1 < len(frames) else "",
                    "num_lidar_pts": ann["num_lidar_pts"], "num_radar_pts": 0})

    def write(self, root, version, map_filename):
        """Writes ``<root>/<version>/<table>.json`` (the map record points at ``map_filename``, relative to root)."""
        self.tables["map"] = [{"category": "semantic_prior", "token": self._tok("map"), "filename": map_filename,
                               "log_tokens": [r["token"] for r in self.tables["log"]]}]
        folder = os.path.join(root, version)
        os.makedirs(folder, exist_ok=True)
        for name in TABLE_NAMES:
            with open(os.path.join(folder, f"{name}.json"), "w") as f:
                json.dump(self.tables[name], f, indent=0)
        return folder
