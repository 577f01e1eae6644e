"""Ground truth scored as if it were a detector's output: a check of the whole data path into the devkit."""
import numpy as np
from tqdm import tqdm

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import METRICS


def ground_truth_predictions(dataset, jitter=0.0, seed=0):
    """One prediction dict per sample holding its GT boxes (centres jittered by N(0, jitter^2) metres)."""
    rng = np.random.RandomState(seed)
    predictions = []
    for i in tqdm(range(len(dataset)), desc="ground truth", unit="sample", leave=False):
        ann = dataset.get_ann_info(i)
        keep = ann["gt_labels_3d"] >= 0
        boxes = ann["gt_bboxes_3d"][keep].astype(np.float64)
        if jitter > 0:
            boxes[:, :2] += rng.normal(scale=jitter, size=(len(boxes), 2))
        predictions.append({"token": dataset.infos[i]["token"], "boxes_3d": boxes,
                            "scores_3d": np.ones(len(boxes)), "labels_3d": ann["gt_labels_3d"][keep]})
    return predictions


def score_ground_truth(cfg, jitter=0.0):
    """Scores the GT of ``cfg.data.val`` with ``cfg.evaluator``; returns the metric dict."""
    val = cfg.data.val
    dataset = NuScenesDataset(dataset_root=val.dataset_root, ann_file=val.ann_file, pipeline=[],
                              object_classes=val.object_classes, test_mode=True)
    metric = METRICS.build(dict(cfg.evaluator))
    metric.process({}, ground_truth_predictions(dataset, jitter))
    return metric.compute_metrics(metric.results)
