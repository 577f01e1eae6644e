"""DDP on the data pipeline's images: no "Grad strides do not match bucket view strides" warning (2 gloo processes)."""
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from mmdet3d.datasets.pipelines.transforms_2d import ImageNormalize


def stride_warnings(rank, init_file, counts):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    rng = np.random.RandomState(rank)
    images = [Image.fromarray(rng.randint(0, 255, (24, 40, 3), dtype=np.uint8)) for _ in range(2)]
    img = ImageNormalize([0.5] * 3, [0.25] * 3)({"img": images})["img"]
    # the pipeline's layout first, then the one ImageNormalize produced before (a channels-last view of the HWC
    # pixels), which shows that the warning is caught here
    for name, batch in (("pipeline", img), ("channels_last", img.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))):
        model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 128, 1, 2)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                model(batch).sum().backward()
        counts[(rank, name)] = sum("Grad strides do not match" in str(w.message) for w in caught)
    dist.destroy_process_group()


def test_pipeline_images_give_ddp_no_gradient_stride_warning(tmp_path):
    counts = mp.get_context("spawn").Manager().dict()
    mp.spawn(stride_warnings, args=(str(tmp_path / "init"), counts), nprocs=2)
    assert counts[(0, "pipeline")] == counts[(1, "pipeline")] == 0
    assert counts[(0, "channels_last")] > 0 and counts[(1, "channels_last")] > 0
