from .nuscenes_metric import NuScenesMetric
from .oracle import ground_truth_predictions, score_ground_truth

__all__ = ["NuScenesMetric", "ground_truth_predictions", "score_ground_truth"]
