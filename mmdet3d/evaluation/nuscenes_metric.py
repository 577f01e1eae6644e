"""nuScenes detection metric: predictions in our LiDAR convention -> devkit result file -> ``DetectionEval``."""
import contextlib
import io
import json
import os
import tempfile
import warnings

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet3d.core.boxes import lidar_boxes_to_global, transform_matrix
from mmdet3d.datasets.nuscenes_dataset import load_infos
from mmdet3d.registry import METRICS

DEFAULT_ATTRIBUTE = {
    "car": "vehicle.parked",
    "truck": "vehicle.parked",
    "construction_vehicle": "vehicle.parked",
    "trailer": "vehicle.parked",
    "bus": "vehicle.moving",
    "pedestrian": "pedestrian.moving",
    "bicycle": "cycle.without_rider",
    "motorcycle": "cycle.without_rider",
    "barrier": "",
    "traffic_cone": "",
}
MOVING_SPEED = 0.2
VEHICLES = {"car", "truck", "construction_vehicle", "bus", "trailer"}
CYCLES = {"bicycle", "motorcycle"}
TP_ERRORS = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}


def attribute_of(name, speed):
    """The attribute BEVFusion assigns from the class and the predicted speed (REFERENCE §7.2)."""
    if speed > MOVING_SPEED:
        if name in VEHICLES:
            return "vehicle.moving"
        if name in CYCLES:
            return "cycle.with_rider"
        return DEFAULT_ATTRIBUTE[name]
    if name == "pedestrian":
        return "pedestrian.standing"
    if name == "bus":
        return "vehicle.stopped"
    return DEFAULT_ATTRIBUTE[name]


def zero_metrics(object_classes):
    out = {"mAP": 0.0, "NDS": 0.0, **{v: 1.0 for v in TP_ERRORS.values()}}
    out.update({f"AP/{c}": 0.0 for c in object_classes})
    return out


@METRICS.register_module()
class NuScenesMetric(BaseMetric):
    """Scores detections with the official nuscenes-devkit.

    Args:
        dataset_root: the nuScenes-format dataset (tables under ``{dataset_root}/{version}``).
        ann_file: info file of the evaluated split (sample tokens and LiDAR poses).
        version: tables version, e.g. ``v1.0-trainval`` or ``v1.0-mini``.
        eval_set: devkit split name (``val``, ``mini_val`` or a key of ``splits.json``).
        object_classes: class names in label order.
        out_dir: keep the result file and the devkit's summaries there (a temp folder otherwise).
    """

    default_prefix = "object"

    def __init__(self, dataset_root, ann_file, version, eval_set, object_classes, modality=None, out_dir=None,
                 eval_config="detection_cvpr_2019", collect_device="cpu", prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.dataset_root = dataset_root
        self.version = version
        self.eval_set = eval_set
        self.object_classes = list(object_classes)
        self.modality = modality or {"use_camera": True, "use_lidar": True}
        self.out_dir = out_dir
        self.eval_config = eval_config
        infos, metadata = load_infos(ann_file)
        if metadata.get("version") not in (None, version):
            raise ValueError(f"{ann_file}: info file of {metadata['version']}, but the evaluation is on version "
                             f"{version} (set --version, or convert this version with tools/create_data.py)")
        self.lidar2global = {
            i["token"]: transform_matrix(i["ego2global_translation"], i["ego2global_rotation"])
            @ transform_matrix(i["lidar2ego_translation"], i["lidar2ego_rotation"])
            for i in infos
        }
        self.lidar2ego = {i["token"]: transform_matrix(i["lidar2ego_translation"], i["lidar2ego_rotation"])
                          for i in infos}

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            self.results.append({
                "token": sample["token"],
                "boxes_3d": np.asarray(_to_numpy(sample["boxes_3d"]), dtype=np.float64).reshape(-1, 9),
                "scores_3d": np.asarray(_to_numpy(sample["scores_3d"]), dtype=np.float64).reshape(-1),
                "labels_3d": np.asarray(_to_numpy(sample["labels_3d"]), dtype=np.int64).reshape(-1),
            })

    def to_result_file(self, results, path):
        """Writes the devkit submission for ``results`` (one entry per sample token of the split)."""
        from nuscenes.eval.common.config import config_factory

        class_range = config_factory(self.eval_config).class_range
        by_token = {r["token"]: r for r in results}
        unknown = set(by_token) - set(self.lidar2global)
        if unknown:
            raise ValueError(f"predictions for {len(unknown)} sample tokens that are not in the evaluated split, "
                             f"e.g. {sorted(unknown)[0]}")
        submission = {}
        for token, lidar2global in self.lidar2global.items():
            boxes = []
            r = by_token.get(token)
            if r is not None and len(r["boxes_3d"]):
                ego_centres = r["boxes_3d"][:, :3] @ self.lidar2ego[token][:3, :3].T + self.lidar2ego[token][:3, 3]
                records = lidar_boxes_to_global(r["boxes_3d"], lidar2global)
                for rec, box, score, label, centre in zip(records, r["boxes_3d"], r["scores_3d"], r["labels_3d"],
                                                          ego_centres):
                    name = self.object_classes[int(label)]
                    if np.linalg.norm(centre[:2]) > class_range[name]:
                        continue
                    speed = float(np.hypot(box[7], box[8]))
                    boxes.append({
                        "sample_token": token,
                        "translation": rec["translation"],
                        "size": rec["size"],
                        "rotation": rec["rotation"],
                        "velocity": rec["velocity"],
                        "detection_name": name,
                        "detection_score": float(score),
                        "attribute_name": attribute_of(name, speed),
                    })
            submission[token] = sorted(boxes, key=lambda b: -b["detection_score"])[:500]
        with open(path, "w") as f:
            json.dump({"meta": self.modality | {"use_radar": False, "use_map": False, "use_external": False},
                       "results": submission}, f)
        return sum(len(v) for v in submission.values())

    def compute_metrics(self, results):
        if self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
            return self._evaluate(results, self.out_dir)
        with tempfile.TemporaryDirectory() as tmp:
            return self._evaluate(results, tmp)

    def _evaluate(self, results, out_dir):
        from nuscenes import NuScenes
        from nuscenes.eval.common.config import config_factory
        from nuscenes.eval.detection.evaluate import DetectionEval

        result_path = os.path.join(out_dir, "results_nusc.json")
        if self.to_result_file(results, result_path) == 0:
            warnings.warn("no predicted boxes: every metric is reported as 0 (errors as 1)")
            return zero_metrics(self.object_classes)
        nusc = NuScenes(version=self.version, dataroot=self.dataset_root, verbose=False)
        evaluator = DetectionEval(nusc, config=config_factory(self.eval_config), result_path=result_path,
                                  eval_set=self.eval_set, output_dir=out_dir, verbose=False)
        if len(evaluator.gt_boxes.all) == 0:
            warnings.warn(f"split '{self.eval_set}' has no ground-truth boxes: every metric is reported as 0")
            return zero_metrics(self.object_classes)
        # The devkit prints its own summary (with the per-class TP errors): it goes to the run's text log, and the
        # tools print the metrics once.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            summary = evaluator.main(render_curves=False)
        logger = MMLogger.get_current_instance()
        if logger.instance_name != "mmengine":  # a run's logger (its console shows warnings only), not the default
            logger.info(f"nuscenes-devkit summary:\n{printed.getvalue()}")
        out = {"mAP": summary["mean_ap"], "NDS": summary["nd_score"]}
        out.update({name: summary["tp_errors"][key] for key, name in TP_ERRORS.items()})
        out.update({f"AP/{c}": summary["mean_dist_aps"][c] for c in self.object_classes})
        return out


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
