"""The sample whose camera rig an export bakes into the graph, and the detection head of a config."""
from mmdet3d.datasets import collate
from mmdet3d.datasets.pipelines.modality import without_points
from mmdet3d.registry import DATASETS, MODELS

__all__ = ["calibration_batch", "build_head"]

SPLITS = ("test", "val")


def calibration_batch(cfg, token=None):
    """``(collated one-sample batch, split name)`` of sample ``token`` (default: the first sample) of the config's
    ``data.test`` split, or ``data.val`` where there is no test split; loaded without LiDAR points."""
    data = cfg.get("data") or {}
    split = next((s for s in SPLITS if data.get(s)), None)
    if split is None:
        raise ValueError("config has neither 'data.test' nor 'data.val': no sample to take the camera rig from")
    dataset_cfg = data[split].to_dict() if hasattr(data[split], "to_dict") else dict(data[split])
    dataset = DATASETS.build(without_points(dataset_cfg))
    if len(dataset) == 0:
        raise ValueError(f"data.{split}: the dataset is empty")
    index = 0
    if token is not None:
        tokens = [info["token"] for info in dataset.infos]
        if token not in tokens:
            raise ValueError(f"--calibration {token}: no such sample in data.{split} ({dataset.ann_file})")
        index = tokens.index(token)
    return collate([dataset[index]]), split


def build_head(cfg):
    """The config's CenterHead (``model.heads.object``), whose ``get_bboxes`` post-processes raw outputs."""
    import mmdet3d.models  # noqa: F401  (registers the heads)

    head_cfg = ((cfg.get("model") or {}).get("heads") or {}).get("object")
    if head_cfg is None:
        raise ValueError("model.heads.object: the config has no detection head")
    return MODELS.build(head_cfg.to_dict() if hasattr(head_cfg, "to_dict") else dict(head_cfg))
