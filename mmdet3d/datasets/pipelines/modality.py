"""Pipelines cut to the inputs a model consumes: a camera-only model (or a SimDistill student at test time) reads no
LiDAR file, so a missing or broken point cloud cannot stop its evaluation, and its loader does no LiDAR work."""
import copy

__all__ = ["POINT_STEPS", "without_points"]

# Steps that only read or change points; the other steps accept results without them.
POINT_STEPS = ("LoadPointsFromFile", "LoadPointsFromMultiSweeps", "PointsRangeFilter", "PointShuffle")


def without_points(dataset_cfg):
    """A copy of a dataset config (a wrapper such as CBGS included) whose pipeline neither loads nor collects points."""
    cfg = copy.deepcopy(dataset_cfg)
    node = cfg
    while "pipeline" not in node and isinstance(node.get("dataset"), dict):
        node = node["dataset"]
    if "pipeline" in node:
        steps = []
        for step in node["pipeline"]:
            if step.get("type") in POINT_STEPS:
                continue
            if step.get("type") == "Collect3D":
                step = dict(step, keys=[k for k in step["keys"] if k != "points"])
            steps.append(step)
        node["pipeline"] = steps
    return cfg
