"""Class-balanced grouping and sampling (CBGS, Zhu et al. 2019) as a dataset wrapper."""
import numpy as np
from torch.utils.data import Dataset

from mmdet3d.registry import DATASETS


@DATASETS.register_module()
class CBGSDataset(Dataset):
    """Repeats samples so that every class appears in about the same number of samples.

    For each class c with sample list S_c, ``int(len(S_c) * r_c)`` samples are drawn from S_c with replacement,
    ``r_c = (1 / num_classes) / (len(S_c) / sum_k len(S_k))``. The draw is seeded, so an epoch's index list is fixed.
    """

    def __init__(self, dataset, seed=0):
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.object_classes = self.dataset.object_classes
        self.indices = self._balanced_indices(np.random.RandomState(seed))

    def _balanced_indices(self, rng):
        per_class = {c: [] for c in range(len(self.object_classes))}
        for idx in range(len(self.dataset)):
            for c in self.dataset.get_cat_ids(idx):
                per_class[c].append(idx)
        total = sum(len(v) for v in per_class.values())
        if total == 0:
            return list(range(len(self.dataset)))
        present = [c for c, v in per_class.items() if v]
        target = 1.0 / len(present)
        indices = []
        for c in present:
            ratio = target / (len(per_class[c]) / total)
            indices += rng.choice(per_class[c], int(len(per_class[c]) * ratio)).tolist()
        return indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]
