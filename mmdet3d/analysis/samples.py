"""Which samples the analysis tools look at: a config's split, and indices spread evenly over it."""
import numpy as np

__all__ = ["build_split", "split_config", "spread_indices"]


def split_config(cfg, split):
    """``data.<split>`` of a loaded config; ``ValueError`` in one line if it has none."""
    dataset_cfg = (cfg.get("data") or {}).get(split)
    if not dataset_cfg:
        raise ValueError(f"config has no 'data.{split}' dataset")
    return dataset_cfg


def build_split(cfg, split):
    """The dataset of ``data.<split>``; ``ValueError`` in one line if the config has none or it is empty."""
    import mmdet3d.datasets  # noqa: F401  (registers the datasets and transforms)
    from mmdet3d.registry import DATASETS

    dataset = DATASETS.build(split_config(cfg, split))
    if len(dataset) == 0:
        raise ValueError(f"data.{split} is empty")
    return dataset


def spread_indices(length, count):
    """``count`` indices spread evenly over ``range(length)`` (all of them if ``count >= length``)."""
    if count < 1:
        raise ValueError(f"--samples must be >= 1, got {count}")
    if length == 0:
        raise ValueError("the dataset is empty")
    if count >= length:
        return list(range(length))
    return sorted(set(np.linspace(0, length - 1, count).round().astype(int).tolist()))
