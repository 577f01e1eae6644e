"""How well a camera model's view transform predicts depth, scored against the LiDAR depth of each feature cell.

The LSS-style transforms lift every feature pixel with a distribution over depth bins; where a LiDAR point falls in
a pixel's cell (``one_hot_depth``), that distribution can be scored: the probability it gives the LiDAR's bin, and
the error of its expected depth. A uniform distribution is the no-knowledge reference.
"""
import torch
import torch.nn.functional as F

from mmdet3d.models.fusion_models.bevfusion import CAMERA_MATRICES
from mmdet3d.models.vtransforms.base import make_depthnet
from mmdet3d.models.vtransforms.depth_lss import lidar_depth_image
from mmdet3d.models.vtransforms.oracle_depth import one_hot_depth

__all__ = ["bin_depths", "camera_encoder", "depth_quality", "depth_vtransform", "fit_depth_probe", "lidar_bins",
           "predicted_depth", "probe_features"]


def camera_encoder(model):
    """The camera encoder that detects: a SimDistill model's student's, else the model's own."""
    encoders = getattr(model, "encoders_student", None) or getattr(model, "encoders", {})
    if "camera" not in encoders:
        raise ValueError(f"{type(model).__name__} has no camera encoder")
    return encoders["camera"]


def depth_vtransform(model):
    """The camera view transform, if it lifts with depth bins (LSS-style); a BEVFormer encoder samples image features
    at 3D reference points instead and predicts no depth to score."""
    vtransform = camera_encoder(model)["vtransform"]
    if not hasattr(vtransform, "frustum"):
        raise ValueError(f"the camera view transform {type(vtransform).__name__} predicts no depth distribution; only "
                         "the LSS-style transforms (a frustum of depth bins) can be scored")
    return vtransform


def bin_depths(model):
    """Depth (m) of each of the camera view transform's D bins, [D]."""
    return depth_vtransform(model).frustum[:, 0, 0, 2]


@torch.no_grad()
def probe_features(model, batch):
    """The image features the camera view transform lifts, ``[B, N, C, fH, fW]`` (eval mode, no gradient)."""
    encoder = camera_encoder(model)
    img = batch["img"]
    feats = encoder["neck"](encoder["backbone"](img.flatten(0, 1)))
    feats = feats if isinstance(feats, torch.Tensor) else feats[0]
    return feats.view(*img.shape[:2], *feats.shape[1:])


def lidar_bins(model, batch):
    """One-hot LiDAR depth bins ``[B*N, D, fH, fW]`` of the camera view transform's feature cells (all-zero where a
    cell holds no point)."""
    if batch.get("points") is None:
        raise ValueError("the batch has no LiDAR points: the depth is scored against them")
    vtransform = depth_vtransform(model)
    lidar = lidar_depth_image(batch["points"], batch["lidar2image"], batch["img_aug_matrix"],
                              batch["lidar_aug_matrix"], vtransform.image_size)
    bins = bin_depths(model)
    dbound = (float(bins[0]), None, float(bins[1] - bins[0]))
    return one_hot_depth(lidar.flatten(0, 1), vtransform.feature_size, dbound, vtransform.D)


@torch.no_grad()
def predicted_depth(model, batch):
    """``(depth probabilities [B*N, D, fH, fW], LiDAR one-hot bins of the same shape)`` for a collated batch with
    points; the model is run in eval mode up to its view transform."""
    target = lidar_bins(model, batch)
    vtransform = depth_vtransform(model)
    _, depth = vtransform(probe_features(model, batch), batch["points"], *(batch[k] for k in CAMERA_MATRICES),
                          metas=batch.get("metas"))
    return depth, target


def fit_depth_probe(feats, target, convs, steps=300, batch=32, lr=1e-3, seed=0):
    """A depth net of the view transforms' layout (``make_depthnet`` with ``convs`` conv3x3 layers) trained with
    AdamW and the LiDAR bins' cross-entropy on fixed features ``[M, C, fH, fW]`` (``target`` one-hot ``[M, D, fH,
    fW]``, cells without a point ignored); returned in eval mode. An analysis of what the features can tell about
    depth, never part of a detector's training."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = make_depthnet(feats.shape[1], feats.shape[1], target.shape[1], convs)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
    probe.train()
    for _ in range(steps):
        pick = torch.randint(0, len(feats), (min(batch, len(feats)),), generator=generator)
        has = target[pick].sum(1) > 0
        if not has.any():
            continue
        nll = -(F.log_softmax(probe(feats[pick]), dim=1) * target[pick]).sum(1)
        optimizer.zero_grad()
        nll[has].mean().backward()
        optimizer.step()
    return probe.eval()


def depth_quality(probs, target, bin_depths):
    """Scores of ``probs`` [M, D, ...] on the cells where ``target`` (one-hot, same shape) has a bin.

    ``bin_depths`` [D] are the bins' depths in metres. Returns the cell count; the mean probability of the LiDAR
    bin and of the bins within one of it, the mean and median absolute error of the expected depth (m), and the same
    for a uniform distribution over the D bins."""
    has = target.sum(1) > 0
    if not has.any():
        raise ValueError("no feature cell has a LiDAR depth")
    p = probs.movedim(1, -1)[has]
    t = target.movedim(1, -1)[has]
    true_bin = t.argmax(-1)
    num_bins = p.shape[-1]
    near = (torch.arange(num_bins)[None] - true_bin[:, None]).abs() <= 1
    truth = bin_depths[true_bin]
    uniform = torch.full((num_bins,), 1.0 / num_bins)
    expected = p @ bin_depths
    uniform_error = (uniform @ bin_depths - truth).abs()
    return {
        "cells": int(has.sum()),
        "p_lidar_bin": float(p.gather(1, true_bin[:, None]).mean()),
        "p_within_one_bin": float((p * near).sum(1).mean()),
        "expected_depth_mae_m": float((expected - truth).abs().mean()),
        "expected_depth_median_ae_m": float((expected - truth).abs().median()),
        "uniform_p_lidar_bin": 1.0 / num_bins,
        "uniform_p_within_one_bin": float((near.float() / num_bins).sum(1).mean()),
        "uniform_expected_depth_mae_m": float(uniform_error.mean()),
    }
