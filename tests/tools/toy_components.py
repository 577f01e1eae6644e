"""Test-only model, dataset and metric with the batch layout of the real ones (``docs/conventions.md``), small enough
for multi-process CLI tests on a CPU. Configs import them with ``custom_imports: {imports: [toy_components]}`` and
this folder on ``PYTHONPATH``."""
import time

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

from mmdet3d.registry import DATASETS, METRICS, MODELS


def toy_token(index):
    return f"toy{index:04d}"


@DATASETS.register_module(name="ToyDetDataset", force=True)
class ToyDetDataset(Dataset):
    """Sample ``i``: 6 tiny camera images, a few LiDAR points, boxes, and a scalar regression target in ``metas``;
    a pure function of ``(seed, i)``. ``delay`` seconds of sleep per sample make a run slow enough to kill."""

    def __init__(self, num_samples=16, seed=0, image_size=(4, 4), delay=0.0):
        self.num_samples = num_samples
        self.seed = seed
        self.image_size = tuple(image_size)
        self.delay = delay

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        if self.delay:
            time.sleep(self.delay)
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        img = torch.randn(6, 3, *self.image_size, generator=g)
        points = torch.randn(3 + index % 4, 5, generator=g)
        boxes = torch.randn(index % 3, 9, generator=g)
        target = 2.0 * img.mean(dim=(0, 2, 3)).sum() + points[:, :3].mean() - 0.5
        return {
            "img": img,
            "points": points,
            "gt_bboxes_3d": boxes,
            "gt_labels_3d": torch.zeros(len(boxes), dtype=torch.long),
            "lidar2image": torch.eye(4).repeat(6, 1, 1),
            "lidar_aug_matrix": torch.eye(4),
            "metas": {"token": toy_token(index), "target": float(target)},
        }


@MODELS.register_module(name="ToyDetector", force=True)
class ToyDetector(BaseModel):
    """A two-layer regressor over pooled image and point features; 'loss' -> MSE, 'predict' -> one box per sample
    whose score is the prediction."""

    def __init__(self, hidden=8):
        super().__init__()
        self.encoder = nn.Linear(3 + 5, hidden)
        self.head = nn.Linear(hidden, 1)

    def predict_target(self, img, points):
        features = torch.cat([img.mean(dim=(1, 3, 4)), torch.stack([p.mean(dim=0) for p in points])], dim=1)
        return self.head(torch.relu(self.encoder(features))).squeeze(1)

    def forward(self, img, points, metas, mode="loss", **unused):
        pred = self.predict_target(img, points)
        if mode == "loss":
            target = torch.tensor([m["target"] for m in metas], dtype=pred.dtype, device=pred.device)
            return {"loss_reg": F.mse_loss(pred, target)}
        if mode == "predict":
            return [{"boxes_3d": p.detach().reshape(1, 1).repeat(1, 9), "scores_3d": p.detach().reshape(1),
                     "labels_3d": torch.zeros(1, dtype=torch.long), "token": m["token"]}
                    for p, m in zip(pred, metas)]
        return pred


@METRICS.register_module(name="ToyOrderMetric", force=True)
class ToyOrderMetric(BaseMetric):
    """Order-sensitive numbers: whether results come in dataset order, their count, MSE and an index-weighted sum."""

    default_prefix = "toy"

    def __init__(self, num_samples, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = num_samples

    def process(self, data_batch, data_samples):
        for meta, out in zip(data_batch["metas"], data_samples):
            self.results.append({"token": out["token"], "pred": float(out["scores_3d"][0]), "target": meta["target"]})

    def compute_metrics(self, results):
        tokens = [r["token"] for r in results]
        return {
            "count": len(results),
            "in_order": float(tokens == [toy_token(i) for i in range(self.num_samples)]),
            "mse": sum((r["pred"] - r["target"]) ** 2 for r in results) / max(len(results), 1),
            "weighted": sum(i * r["pred"] for i, r in enumerate(results)),
        }
