"""The metric scored by the official devkit: ground truth as predictions is perfect, noise costs, nothing is 0."""
import os

import numpy as np
import pytest

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.evaluation import NuScenesMetric, ground_truth_predictions as gt_predictions
from mmdet3d.evaluation.nuscenes_metric import attribute_of

CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]


@pytest.fixture(scope="module")
def val_set(synthetic_root):
    ann_file = os.path.join(synthetic_root, "nuscenes_infos_val.pkl")
    dataset = NuScenesDataset(synthetic_root, ann_file, pipeline=[], object_classes=CLASSES, test_mode=True)
    return dataset, ann_file


def make_metric(root, ann_file):
    return NuScenesMetric(dataset_root=root, ann_file=ann_file, version="v1.0-mini", eval_set="mini_val",
                          object_classes=CLASSES)


def run(metric, predictions):
    metric.process({}, predictions)
    return metric.compute_metrics(metric.results)


def test_ground_truth_scores_one(synthetic_root, val_set, capsys):
    dataset, ann_file = val_set
    metrics = run(make_metric(synthetic_root, ann_file), gt_predictions(dataset))
    assert "Per-class results" not in capsys.readouterr().out  # the devkit's own summary goes to the log only
    assert metrics["mAP"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["NDS"] == pytest.approx(1.0, abs=1e-6)
    for c in CLASSES:
        assert metrics[f"AP/{c}"] == pytest.approx(1.0, abs=1e-6)
    for err in ["mATE", "mASE", "mAOE", "mAVE", "mAAE"]:
        assert metrics[err] < 1e-3


def test_jittered_ground_truth_scores_lower(synthetic_root, val_set):
    dataset, ann_file = val_set
    metrics = run(make_metric(synthetic_root, ann_file), gt_predictions(dataset, jitter=1.0))
    assert 0.05 < metrics["mAP"] < 0.95
    assert metrics["NDS"] < 0.95
    assert metrics["mATE"] > 0.3


def test_empty_predictions_score_zero(synthetic_root, val_set):
    dataset, ann_file = val_set
    empty = [{"token": dataset.infos[i]["token"], "boxes_3d": np.zeros((0, 9)), "scores_3d": np.zeros(0),
              "labels_3d": np.zeros(0, np.int64)} for i in range(len(dataset))]
    with pytest.warns(UserWarning, match="no predicted boxes"):
        metrics = run(make_metric(synthetic_root, ann_file), empty)
    assert metrics["mAP"] == 0.0 and metrics["NDS"] == 0.0


def test_boxes_beyond_class_range_are_dropped(synthetic_root, val_set, tmp_path):
    dataset, ann_file = val_set
    metric = make_metric(synthetic_root, ann_file)
    token = dataset.infos[0]["token"]
    far_cone = np.array([[45.0, 0, 0, 0.4, 0.4, 1.0, 0, 0, 0]])  # cones count to 30 m only
    near_cone = np.array([[10.0, 0, 0, 0.4, 0.4, 1.0, 0, 0, 0]])
    preds = [{"token": token, "boxes_3d": np.concatenate([far_cone, near_cone]), "scores_3d": np.ones(2),
              "labels_3d": np.array([9, 9])}]
    assert metric.to_result_file(preds, str(tmp_path / "r.json")) == 1


def test_info_file_of_another_version_is_an_error(synthetic_root, val_set):
    _, ann_file = val_set
    with pytest.raises(ValueError, match=r"nuscenes_infos_val.pkl: info file of v1.0-mini, but the evaluation is on "
                                         r"version v1.0-trainval"):
        NuScenesMetric(dataset_root=synthetic_root, ann_file=ann_file, version="v1.0-trainval", eval_set="val",
                       object_classes=CLASSES)


def test_unknown_token_is_an_error(synthetic_root, val_set, tmp_path):
    _, ann_file = val_set
    metric = make_metric(synthetic_root, ann_file)
    with pytest.raises(ValueError, match="not in the evaluated split"):
        metric.to_result_file([{"token": "nope", "boxes_3d": np.zeros((0, 9)), "scores_3d": np.zeros(0),
                                "labels_3d": np.zeros(0, np.int64)}], str(tmp_path / "r.json"))


@pytest.mark.parametrize("name,speed,expected", [
    ("car", 5.0, "vehicle.moving"), ("car", 0.0, "vehicle.parked"), ("bus", 0.0, "vehicle.stopped"),
    ("bicycle", 3.0, "cycle.with_rider"), ("motorcycle", 0.1, "cycle.without_rider"),
    ("pedestrian", 0.0, "pedestrian.standing"), ("pedestrian", 1.0, "pedestrian.moving"),
    ("traffic_cone", 1.0, ""), ("barrier", 0.0, ""),
])
def test_attribute_rules(name, speed, expected):
    assert attribute_of(name, speed) == expected
