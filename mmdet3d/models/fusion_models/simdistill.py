"""SimDistill: a camera-only student that simulates the teacher's LiDAR-camera fusion, distilled from a frozen
BEVFusion teacher (Zhao et al., AAAI 2024).

Student (images only):
    backbone -> neck -> vtransform   -> sim-LiDAR BEV --GCM (+ residual)--\
                     \-> vtransform2 -> camera BEV  ----------------------> fuser_student -> decoder -> CenterHead
Losses: GT detection + IMD (camera BEV vs teacher camera BEV) + CMD (trans_student(sim-LiDAR BEV) vs teacher LiDAR
BEV, object-masked) + MMD-F (fused vs teacher fused) + MMD-P (heatmap and box KD).
The BEVFormer student (VARIANTS.md B.5) makes ``vtransform`` a ``BEVFormerEncoder`` over every neck level (with the
previous key frame's BEV when ``temporal``); ``vtransform2`` then reads the neck level of the teacher's stride.

The teacher modules keep BEVFusion's names (``encoders``, ``fuser``, ``decoder``, ``heads``), the student's get
``*_student`` and the GCM is ``deformAttn``, as in the released code, so its checkpoints map key for key.
"""
import copy
import dataclasses

import torch
from mmengine.logging import print_log

from mmdet3d.models.heads.centerpoint import REG_HEADS, gather_feat
from mmdet3d.models.losses import distill
from mmdet3d.registry import MODELS
from mmdet3d.utils.checkpoint import extract_state_dict, load_state_dict_checked, read_checkpoint

from ..bevformer.checkpoint import load_bevformer_weights
from .bevfusion import BEVFusion, CAMERA_MATRICES, attach_tokens, build_camera_encoder, build_decoder, build_heads, \
    set_frozen
from .gcm import BEVDeformableAttention
from .temporal import previous_bev

DISTILL_FLAGS = ("fusion_feature", "plidar_feature", "plidar_mask", "img_feature", "prediction_distill",
                 "bev_DeformAttn")
TEACHER_PARTS = ("encoders", "fuser", "decoder", "heads")
DEFAULT_WEIGHTS = {"fusion_feature": 1.0, "img_feature": 1.0, "plidar_feature": 1.0, "kd_cls": 0.25, "kd_box": 0.25}


@dataclasses.dataclass(frozen=True)
class OfficialSwitches:
    """Where the released code departs from the paper (DESIGN §2). All False = the paper; ``official: true`` in the
    config sets all of them, a dict sets them one by one."""

    student_depth_input: bool = False      # F1: the student's view transform gets LiDAR depth
    shared_vtransform: bool = False        # F2: one student view transform called twice
    trainable_teacher_fuser: bool = False  # F5: teacher fuser trains and its outputs keep their graph
    corner_reference: bool = False         # F9: GCM reference points at i/H
    kd_losses: bool = False                # F6/F7: the double-sigmoid heatmap KD and the unmasked box KD
    cmd_loss: bool = False                 # F8: 100 x mean over all elements
    random_student_init: bool = False      # F3: no copy of the teacher camera encoder

    @classmethod
    def from_config(cls, cfg):
        if cfg is None or cfg is False:
            return cls()
        if cfg is True:
            return cls(**{f.name: True for f in dataclasses.fields(cls)})
        unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"model.official: unknown switches {sorted(unknown)}")
        return cls(**cfg)


STUDENT_CAMERA_PARTS = ("backbone", "neck")    # start from the teacher's where they have its tensors
SIM_LIDAR_ENCODERS = ("BEVFormerEncoder",)      # what may replace the sim-LiDAR view transform


def student_camera_config(camera_cfg, depth_input, student_cfg=None):
    """The student's camera encoder: the teacher's, with a camera-only view transform unless LiDAR depth is fed, and
    with the ``backbone``/``neck`` that ``student_cfg`` (``model.encoders_student.camera``) gives instead.

    ``vtransform`` is the sim-LiDAR branch, ``vtransform2`` the camera branch; both are that view transform unless
    ``student_cfg`` gives a ``vtransform`` of ``SIM_LIDAR_ENCODERS`` (the BEVFormer student, VARIANTS.md B.5),
    which then replaces the sim-LiDAR branch only."""
    cfg = copy.deepcopy(dict(camera_cfg))
    student_cfg = copy.deepcopy(dict(student_cfg or {}))
    unknown = set(student_cfg) - set(STUDENT_CAMERA_PARTS) - {"vtransform"}
    if unknown:
        raise ValueError(f"model.encoders_student.camera: only {list(STUDENT_CAMERA_PARTS)} and a sim-LiDAR "
                         f"vtransform can differ from the teacher's, got {sorted(unknown)}")
    sim_lidar = student_cfg.pop("vtransform", None)
    if sim_lidar is not None and sim_lidar.get("type") not in SIM_LIDAR_ENCODERS:
        raise ValueError(f"model.encoders_student.camera.vtransform.type must be one of {list(SIM_LIDAR_ENCODERS)} "
                         f"(the camera branch is always the teacher's transform), got {sim_lidar.get('type')!r}")
    cfg.update(student_cfg)
    vtransform = dict(cfg["vtransform"])
    if not depth_input:
        vtransform["type"] = "LSSTransform"
    cfg["vtransform"] = dict(sim_lidar) if sim_lidar is not None else vtransform
    cfg["vtransform2"] = vtransform
    return cfg


def same_tensors(state, other):
    return state.keys() == other.keys() and all(state[k].shape == other[k].shape for k in state)


def bev_cells(vtransform_cfg, bound):
    """Cells of the view transform's output BEV along one axis (after its downsample)."""
    lo, hi, step = vtransform_cfg[bound]
    return round((hi - lo) / step) // vtransform_cfg.get("downsample", 1)


@MODELS.register_module()
class SimDistill(BEVFusion):
    """Teacher (frozen BEVFusion) + simulated-fusion student.

    Args (beyond BEVFusion's, which describe the teacher):
        fuser_student: fuses [sim-LiDAR BEV, camera BEV] (80 + 80 -> 256).
        trans_student: maps the sim-LiDAR BEV to the teacher's LiDAR channels for CMD (80 -> 256).
        teacher_checkpoint: weights of a trained teacher (our BEVFusion checkpoint).
        distill_weights: loss weights, keys of ``DEFAULT_WEIGHTS``.
        official: switches of ``OfficialSwitches``.
        encoders: the teacher encoders, plus the original's flags ``fusion_feature``, ``plidar_feature``,
            ``plidar_mask``, ``img_feature``, ``prediction_distill``, ``bev_DeformAttn``.
        encoders_student: ``{camera: {backbone, neck}}``, the student's own camera backbone and neck; a part not
            given is the teacher's architecture. ``camera.vtransform: {type: BEVFormerEncoder, ...}`` makes the
            sim-LiDAR branch a BEVFormer encoder over all neck levels (VARIANTS.md B.5); the camera branch stays the
            camera-only LSS on the neck level of the teacher's feature size.
        temporal: (BEVFormer student) feed the previous key frame's BEV, computed from the batch's ``prev_*``
            inputs (``temporal.py``) and aligned by ego motion, to the encoder's temporal self-attention.
        bevformer_checkpoint: (BEVFormer student) a ``bevformer_r101_dcn_24ep.pth``-layout file for the student
            backbone, neck and encoder (``bevformer/checkpoint.py``), loaded after the teacher.
    """

    def __init__(self, encoders, decoder, heads, fuser, fuser_student, trans_student, teacher_checkpoint=None,
                 distill_weights=None, official=None, gcm=None, encoders_student=None, temporal=False,
                 bevformer_checkpoint=None, data_preprocessor=None, init_cfg=None):
        super().__init__(encoders=encoders, decoder=decoder, heads=heads, fuser=fuser,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if set(self.encoders) != {"camera", "lidar"}:
            raise ValueError("SimDistill: the teacher needs both model.encoders.camera and model.encoders.lidar")
        self.official = OfficialSwitches.from_config(official)
        self.flags = {name: bool(encoders.get(name, True)) for name in DISTILL_FLAGS}
        self.weights = dict(DEFAULT_WEIGHTS, **(distill_weights or {}))
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"model.distill_weights: unknown keys {sorted(unknown)}")

        camera_cfg = student_camera_config(encoders["camera"], self.official.student_depth_input,
                                           (encoders_student or {}).get("camera"))
        self.bevformer = camera_cfg["vtransform"]["type"] in SIM_LIDAR_ENCODERS
        if self.bevformer and self.official.shared_vtransform:
            raise ValueError("model.official.shared_vtransform: one view transform cannot serve both branches of the "
                             "BEVFormer student")
        if temporal and not self.bevformer:
            raise ValueError("model.temporal: only the BEVFormer student (encoders_student.camera.vtransform.type "
                             "BEVFormerEncoder) has a temporal input")
        self.temporal = bool(temporal)
        self.encoders_student = torch.nn.ModuleDict({"camera": build_camera_encoder(camera_cfg)})
        if not self.official.shared_vtransform:
            self.encoders_student["camera"]["vtransform2"] = MODELS.build(camera_cfg["vtransform2"])
        if self.bevformer:
            check_same_grid(self.encoders_student["camera"]["vtransform"], camera_cfg["vtransform2"])
        self.fuser_student = MODELS.build(fuser_student)
        self.decoder_student = build_decoder(decoder)
        self.heads_student = build_heads(heads)
        # Optional modules come last so that, for one seed, the modules every student has start from the same
        # weights whichever flags are on: ablations and the baseline then differ from SimDistill only by the losses.
        if self.flags["bev_DeformAttn"]:
            gcm_cfg = dict(gcm or {})
            channels = camera_cfg["vtransform2"]["out_channels"]
            gcm_cfg.setdefault("bev_h", bev_cells(camera_cfg["vtransform2"], "xbound"))
            gcm_cfg.setdefault("bev_w", bev_cells(camera_cfg["vtransform2"], "ybound"))
            self.deformAttn = BEVDeformableAttention(channels=channels, corner_reference=self.official.corner_reference,
                                                     **gcm_cfg)
        if self.flags["plidar_feature"]:
            self.trans_student = MODELS.build(trans_student)

        if teacher_checkpoint:
            self.load_teacher(teacher_checkpoint)
        if bevformer_checkpoint:
            if not self.bevformer:
                raise ValueError("model.bevformer_checkpoint: the student has no BEVFormer encoder")
            load_bevformer_weights(self.encoders_student["camera"], bevformer_checkpoint)
        self.freeze_teacher()

    # Training needs model.teacher_checkpoint (the runner checks it before anything is written).
    trains_from_teacher = True

    @staticmethod
    def reads_points(model_cfg, training):
        """Training runs the LiDAR teacher; inference is the camera-only student, unless LiDAR depth is fed to it."""
        return training or OfficialSwitches.from_config(model_cfg.get("official")).student_depth_input

    # ----------------------------------------------------------------------------------------------- set-up
    def teacher_modules(self):
        names = ["encoders", "decoder", "heads"] + ([] if self.official.trainable_teacher_fuser else ["fuser"])
        return {n: getattr(self, n) for n in names}

    def freeze_teacher(self):
        for module in self.teacher_modules().values():
            set_frozen(module, True)

    def load_teacher(self, path):
        """Loads a teacher checkpoint (keys ``encoders.*``, ``fuser.*``, ``decoder.*``, ``heads.*``; other keys, e.g.
        a whole SimDistill checkpoint's student, are ignored) and, unless the official random init is asked for,
        starts the student camera backbone and neck from the teacher's where they have the same tensors (a student
        backbone of another architecture keeps its own initialisation, e.g. its ``init_cfg``)."""
        state = extract_state_dict(read_checkpoint(path), path)
        if not any(k.split(".")[0] in TEACHER_PARTS for k in state):
            raise ValueError(f"{path}: no teacher weights (keys encoders.*, fuser.*, decoder.*, heads.*)")
        # Part by part and strictly: a teacher with a missing or reshaped tensor must not distil from random weights.
        for part in TEACHER_PARTS:
            prefix = part + "."
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            load_state_dict_checked(getattr(self, part), weights, f"{path} [{prefix}*]", strict=True)
        if not self.official.random_student_init:
            for part in STUDENT_CAMERA_PARTS:
                student, teacher = self.encoders_student["camera"][part], self.encoders["camera"][part].state_dict()
                if same_tensors(student.state_dict(), teacher):
                    student.load_state_dict(teacher)
                else:
                    print_log(f"student camera {part} ({type(student).__name__}) differs from the teacher's: it keeps "
                              "its own initialisation", logger="current")

    def train(self, mode=True):
        super().train(mode)
        for module in self.teacher_modules().values():
            module.eval()
        return self

    # ------------------------------------------------------------------------------------------------ student
    def student_features(self, img):
        """The student neck's levels, each [B, N, C, h, w], for images [B, N, 3, H, W]."""
        encoder = self.encoders_student["camera"]
        b, n = img.shape[:2]
        feats = encoder["neck"](encoder["backbone"](img.flatten(0, 1)))
        feats = [feats] if isinstance(feats, torch.Tensor) else list(feats)
        return [f.view(b, n, *f.shape[1:]) for f in feats]

    def student_bev(self, batch):
        """(sim-LiDAR BEV after the GCM, camera BEV), each [B, C, X, Y]."""
        encoder = self.encoders_student["camera"]
        levels = self.student_features(batch["img"])
        feats = matching_level(levels, encoder["vtransform2"]) if self.bevformer else levels[0]
        points = batch.get("points") if self.official.student_depth_input else None
        args = (feats, points, *(batch[k] for k in CAMERA_MATRICES))
        if self.bevformer:
            prev_bev, prev_valid = previous_bev(self, batch) if self.temporal else (None, None)
            sim_lidar, _ = encoder["vtransform"](levels, batch["lidar2image"], batch["img_aug_matrix"],
                                                 batch["lidar_aug_matrix"], prev_bev=prev_bev, prev_valid=prev_valid)
        else:
            sim_lidar, _ = encoder["vtransform"](*args, metas=batch.get("metas"))
        second = encoder["vtransform"] if self.official.shared_vtransform else encoder["vtransform2"]
        camera, _ = second(*args, metas=batch.get("metas"))
        if self.flags["bev_DeformAttn"]:
            sim_lidar = self.deformAttn(sim_lidar) + sim_lidar
        return sim_lidar, camera

    def student_outputs(self, batch):
        sim_lidar, camera = self.student_bev(batch)
        fused = self.fuser_student([sim_lidar, camera])
        preds = self.heads_student["object"](self.decode_with(self.decoder_student, fused))
        return sim_lidar, camera, fused, preds

    @staticmethod
    def decode_with(decoder, fused):
        x = decoder["neck"](decoder["backbone"](fused))
        return x if isinstance(x, torch.Tensor) else x[0]

    def predict(self, batch):
        _, _, _, preds = self.student_outputs(batch)
        return attach_tokens(self.heads_student["object"].get_bboxes(preds, batch.get("metas")), batch.get("metas"))

    def head_outputs(self, batch):
        return self.student_outputs(batch)[3]

    # ------------------------------------------------------------------------------------------------ teacher
    def teacher_outputs(self, batch):
        """Only what the enabled losses need: camera BEV, LiDAR BEV, fused BEV, head outputs."""
        f = self.flags
        need_fused = f["fusion_feature"] or f["prediction_distill"]
        need_camera = f["img_feature"] or need_fused
        need_lidar = f["plidar_feature"] or need_fused
        out = {}
        with torch.no_grad():
            if need_camera:
                out["camera"] = self.extract_camera_features(batch)
            if need_lidar:
                out["lidar"] = self.extract_lidar_features(batch["points"])
        if need_fused:
            with torch.set_grad_enabled(self.official.trainable_teacher_fuser and torch.is_grad_enabled()):
                out["fused"] = self.fuser([out["camera"], out["lidar"]])
        if f["prediction_distill"]:
            with torch.set_grad_enabled(self.official.trainable_teacher_fuser and torch.is_grad_enabled()):
                out["preds"] = self.heads["object"](self.decode(out["fused"]))
        return out

    # --------------------------------------------------------------------------------------------------- loss
    def loss(self, batch):
        if batch.get("points") is None:
            raise ValueError("batch['points']: SimDistill training runs the LiDAR teacher and needs points")
        sim_lidar, camera, fused, preds = self.student_outputs(batch)
        teacher = self.teacher_outputs(batch)
        head = self.heads_student["object"]
        targets = head.get_targets(batch["gt_bboxes_3d"], batch["gt_labels_3d"])
        losses = {f"loss/object/{k}": v
                  for k, v in head.loss(batch["gt_bboxes_3d"], batch["gt_labels_3d"], preds, targets).items()}
        off, w = self.official, self.weights
        if self.flags["img_feature"]:
            losses["loss/distill/img_feature"] = w["img_feature"] * distill.feature_mse(
                camera, teacher["camera"], off.trainable_teacher_fuser)
        if self.flags["fusion_feature"]:
            losses["loss/distill/fusion_feature"] = w["fusion_feature"] * distill.feature_mse(
                fused, teacher["fused"], off.trainable_teacher_fuser)
        if self.flags["plidar_feature"]:
            projected = self.trans_student([sim_lidar])
            if self.flags["plidar_mask"]:
                mask = head.heatmaps_to_object_mask(targets.heatmaps)
                losses["loss/distill/plidar_feature"] = w["plidar_feature"] * distill.cross_modal_loss(
                    projected, teacher["lidar"], mask, off.cmd_loss)
            else:
                losses["loss/distill/plidar_feature"] = w["plidar_feature"] * distill.feature_mse(projected,
                                                                                                   teacher["lidar"])
        if self.flags["prediction_distill"]:
            losses.update(self.prediction_distill_losses(targets, preds, teacher["preds"]))
        return losses

    def prediction_distill_losses(self, targets, student_preds, teacher_preds):
        code_weights = self.heads_student["object"].train_cfg["code_weights"]
        off, w = self.official, self.weights
        losses = {}
        for t, (s_task, t_task) in enumerate(zip(student_preds, teacher_preds)):
            losses[f"loss/distill/kd_cls/task{t}"] = w["kd_cls"] * distill.kd_heatmap_loss(
                s_task["heatmap"], t_task["heatmap"], off.kd_losses)
            inds = targets.inds[t]
            losses[f"loss/distill/kd_box/task{t}"] = w["kd_box"] * distill.kd_box_loss(
                gather_box_code(s_task, inds), gather_box_code(t_task, inds), targets.masks[t], code_weights,
                off.kd_losses)
        return losses


def check_same_grid(bevformer, lss_cfg):
    """The BEVFormer branch (a built ``BEVFormerEncoder``) must give the LSS branch's channels on the LSS branch's
    cells (the fuser and GCM take both), VARIANTS.md B.5."""
    x_min, y_min, _, x_max, y_max, _ = bevformer.bev_pc_range
    got = (bevformer.bev_proj[0].out_channels, bevformer.bev_w, bevformer.bev_h, x_min, x_max, y_min, y_max)
    want = (lss_cfg["out_channels"], bev_cells(lss_cfg, "xbound"), bev_cells(lss_cfg, "ybound"),
            *(float(v) for v in lss_cfg["xbound"][:2]), *(float(v) for v in lss_cfg["ybound"][:2]))
    if got != want:
        raise ValueError(f"model.encoders_student.camera.vtransform: BEVFormerEncoder (out_channels, bev_w, bev_h, "
                         f"x range, y range) = {got} must equal the camera branch's (channels, X, Y, xbound, ybound) "
                         f"= {want}")


def matching_level(levels, transform):
    """The neck level of the view transform's ``feature_size`` (the teacher's feature stride)."""
    for feats in levels:
        if tuple(feats.shape[-2:]) == tuple(transform.feature_size):
            return feats
    raise ValueError(f"student neck: no level of size {list(transform.feature_size)} (vtransform2.feature_size) "
                     f"among {[list(f.shape[-2:]) for f in levels]}")


def gather_box_code(task_preds, inds):
    """The 10-channel box code [B, K, 10] of one task's outputs at flat BEV indices ``inds`` [B, K]."""
    return gather_feat(torch.cat([task_preds[name] for name in REG_HEADS], dim=1), inds)
