"""2D-only pretraining of a camera backbone on generated images: per-pixel class labels (segmentation), never
depth, so that a backbone pretrained here hands no student what distillation is meant to add. The checkpoint is in
mmdet's layout (``state_dict`` with ``backbone.*`` keys) and loads through the backbone's
``init_cfg: {type: Pretrained, checkpoint: PATH}``."""
import io
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from mmdet3d.datasets.synthetic.segmentation import SEGMENTATION_CLASSES, segmentation_frames
from mmdet3d.registry import MODELS

from mmdet3d.utils.checkpoint import atomic_write_bytes

__all__ = ["SegmentationNet", "crop_like_test_pipeline", "pretrain_backbone", "segmentation_scores"]

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
BACKGROUND_WEIGHT = 0.2  # ground and sky cover ~70 % of the pixels; objects are what the detector needs


class SegmentationNet(nn.Module):
    """The camera backbone with a light FPN-style classifier: each output level -> 1x1 conv to ``width``, summed at
    the finest level's stride, then a 3x3 conv and a 1x1 classifier, upsampled to the input size."""

    def __init__(self, backbone_cfg, level_channels, num_classes, width=64):
        super().__init__()
        self.backbone = MODELS.build(dict(backbone_cfg))
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(True))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, images):
        levels = self.backbone(images)
        if len(levels) != len(self.laterals):
            raise ValueError(f"SegmentationNet: the backbone returned {len(levels)} levels, the head expects "
                             f"{len(self.laterals)} (level_channels)")
        size = levels[0].shape[-2:]
        x = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size
                else lat(f) for lat, f in zip(self.laterals, levels))
        logits = self.classifier(self.fuse(x))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def crop_like_test_pipeline(image, labels, final_dim):
    """Resizes a camera image ``[H, W, 3]`` and its labels ``[H, W]`` to the network's width as the test pipeline's
    ``ImageAug3D`` does (bicubic; labels nearest) and keeps the bottom ``final_dim[0]`` rows, centred."""
    f_h, f_w = final_dim
    height, width = labels.shape
    r = f_w / width
    new_w, new_h = int(width * r), int(height * r)
    if new_h < f_h:
        raise ValueError(f"pretrain: images of {height}x{width} resized to width {f_w} are lower than {f_h} rows")
    crop = ((new_w - f_w) // 2, new_h - f_h, (new_w - f_w) // 2 + f_w, new_h)
    img = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC).crop(crop))
    lab = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((new_w, new_h), Image.Resampling.NEAREST)
                     .crop(crop))
    return img, lab.astype(np.int64)


def _frames(seed, scenes, frames_per_scene, source_size, final_dim, desc):
    images, labels = [], []
    total = scenes * frames_per_scene
    for cams, labs in tqdm(segmentation_frames(seed, scenes, frames_per_scene, source_size), total=total,
                           unit="frame", desc=desc):
        for im, lab in zip(cams, labs):
            im, lab = crop_like_test_pipeline(im, lab, final_dim)
            images.append(im)
            labels.append(lab)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def _normalise(images_uint8):
    return (images_uint8.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def segmentation_scores(net, images, labels, batch=24):
    """Pixel accuracy and mean IoU over the classes present (``labels`` int64 ``[N, H, W]``)."""
    net.eval()
    num_classes = len(SEGMENTATION_CLASSES)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            pred = net(_normalise(images[i:i + batch])).argmax(1)
            truth = labels[i:i + batch]
            confusion += torch.bincount(truth.flatten() * num_classes + pred.flatten(),
                                        minlength=num_classes ** 2).view(num_classes, num_classes)
    inter = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    present = confusion.sum(1) > 0
    return {"pixel_acc": float(inter.sum() / confusion.sum()), "miou": float((inter / union)[present].mean()),
            "object_iou": float((inter / union)[1:][present[1:]].mean())}


def pretrain_backbone(backbone_cfg, level_channels, out_path, final_dim, source_size, iters=1500, batch=12,
                      lr=2e-3, scenes=60, frames_per_scene=5, val_scenes=6, seed=0, log=print):
    """Trains ``backbone_cfg`` on per-pixel classes of generated images and writes its weights to ``out_path``
    (atomically); returns the held-out scores and the time taken."""
    if iters < 1 or batch < 1 or scenes < 1 or frames_per_scene < 1 or val_scenes < 1:
        raise ValueError("pretrain: iters, batch, scenes, frames_per_scene and val_scenes must be positive")
    start = time.time()
    torch.manual_seed(seed)
    images, labels = _frames(seed, scenes, frames_per_scene, source_size, final_dim, "rendering train images")
    val_images, val_labels = _frames(seed + 1_000_003, val_scenes, frames_per_scene, source_size, final_dim,
                                     "rendering held-out images")
    net = SegmentationNet(backbone_cfg, level_channels, len(SEGMENTATION_CLASSES))
    weights = torch.ones(len(SEGMENTATION_CLASSES))
    weights[0] = BACKGROUND_WEIGHT
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, iters // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(i, iters) / iters)))
    generator = torch.Generator().manual_seed(seed)
    net.train()
    bar = tqdm(range(iters), unit="it", desc="pretraining")
    for _ in bar:
        idx = torch.randint(len(images), (batch,), generator=generator)
        x, y = _normalise(images[idx]), labels[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        loss = F.cross_entropy(net(x), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    scores = segmentation_scores(net, val_images, val_labels)
    state = {f"backbone.{k}": v for k, v in net.backbone.state_dict().items()}
    meta = {"task": "per-pixel class segmentation of generated images (2D only)", "classes": SEGMENTATION_CLASSES,
            "backbone": json.loads(json.dumps(dict(backbone_cfg))), "iters": iters, "batch": batch, "lr": lr,
            "train_images": len(images),
            "image_size": list(final_dim), "seed": seed, "held_out": scores}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buffer)
    atomic_write_bytes(buffer.getvalue(), out_path)
    seconds = time.time() - start
    log(f"pretrained {backbone_cfg.get('type')} in {seconds / 60:.1f} min: held-out pixel accuracy "
        f"{scores['pixel_acc']:.3f}, mIoU {scores['miou']:.3f} (objects {scores['object_iou']:.3f}) -> {out_path}")
    return scores, seconds
