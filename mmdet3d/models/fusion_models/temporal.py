"""The temporal input of the BEVFormer student: the previous key frame's BEV on the current grid.

As BEVFormer's training (VARIANTS.md B.3 item 10), the previous frame goes through the student's camera encoder in
eval mode without gradients and without its own history (a queue of two frames), then is aligned by ego motion.
The frame comes with the batch (``NuScenesDataset(with_prev_frame=True)``), at training and at test alike, so the
model keeps no state between batches.
"""
import torch

from ..bevformer import align_prev_bev

__all__ = ["PREV_KEYS", "previous_bev"]

# prev_img [B, N, 3, H, W]; prev_lidar2image, prev_img_aug_matrix [B, N, 4, 4]; prev_lidar_aug_matrix,
# prev_ego2global, ego2global, lidar2ego [B, 4, 4]; prev_exists [B] (False: first frame of its scene)
PREV_KEYS = ("prev_img", "prev_lidar2image", "prev_img_aug_matrix", "prev_lidar_aug_matrix", "prev_ego2global",
             "ego2global", "lidar2ego", "prev_exists")


def previous_bev(model, batch):
    """``(prev_bev [B, C, X, Y] aligned to this frame, prev_valid [B] bool)``, or ``(None, None)`` when no sample of
    the batch has a previous frame."""
    missing = [k for k in PREV_KEYS if batch.get(k) is None]
    if missing:
        raise ValueError(f"batch: model.temporal needs {missing} (the dataset's with_prev_frame: true)")
    valid = batch["prev_exists"]
    if valid.dtype != torch.bool or tuple(valid.shape) != (batch["img"].shape[0],):
        raise ValueError(f"batch['prev_exists'] must be a [{batch['img'].shape[0]}] bool tensor, got "
                         f"{valid.dtype} {list(valid.shape)}")
    if not valid.any():
        return None, None
    encoder = model.encoders_student["camera"]
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            levels = model.student_features(batch["prev_img"])
            _, embed = encoder["vtransform"](levels, batch["prev_lidar2image"], batch["prev_img_aug_matrix"],
                                             batch["prev_lidar_aug_matrix"])
    finally:
        encoder.train(was_training)
    aligned = align_prev_bev(embed, batch["prev_ego2global"], batch["ego2global"],
                             encoder["vtransform"].bev_pc_range, batch["lidar2ego"],
                             prev_lidar_aug=batch["prev_lidar_aug_matrix"], curr_lidar_aug=batch["lidar_aug_matrix"])
    return aligned, valid
