"""BEVFusion: the LiDAR-camera teacher, and with a subset of encoders the LiDAR-only or camera-only detector.

camera: image backbone -> neck -> view transform (lift-splat into BEV)     \
                                                                            > fuser -> decoder -> CenterHead
lidar:  voxelize -> sparse encoder (flattened to BEV)                      /
"""
from collections import OrderedDict

import torch
from mmengine.model import BaseModel
from torch import nn

from mmdet3d.registry import MODELS

from ..lidar_voxelizer import HardVoxelizer

CAMERA_MATRICES = ("camera2ego", "lidar2ego", "lidar2camera", "lidar2image", "camera_intrinsics", "camera2lidar",
                   "img_aug_matrix", "lidar_aug_matrix")


def build_camera_encoder(cfg):
    return nn.ModuleDict({"backbone": MODELS.build(cfg["backbone"]), "neck": MODELS.build(cfg["neck"]),
                          "vtransform": MODELS.build(cfg["vtransform"])})


def build_decoder(cfg):
    return nn.ModuleDict({"backbone": MODELS.build(cfg["backbone"]), "neck": MODELS.build(cfg["neck"])})


def build_heads(cfg):
    if cfg.get("map") is not None:
        raise ValueError("model.heads.map: BEV map segmentation is not supported; set it to null")
    if cfg.get("object") is None:
        raise ValueError("model.heads.object: a detection head config is required")
    return nn.ModuleDict({"object": MODELS.build(cfg["object"])})


def set_frozen(module, frozen):
    """Freezes (no gradients, BN statistics fixed) or unfreezes a module; ``train()`` keeps frozen ones in eval."""
    for p in module.parameters():
        p.requires_grad_(not frozen)
    module._frozen = frozen
    if frozen:
        module.eval()


def keep_frozen_in_eval(root):
    for m in root.modules():
        if getattr(m, "_frozen", False):
            m.eval()


@MODELS.register_module()
class BEVFusion(BaseModel):
    """Any subset of {camera, lidar} encoders, an optional fuser, a BEV decoder and a CenterHead.

    Args:
        encoders: ``{camera: {backbone, neck, vtransform}, lidar: {voxelize, backbone}}``; either may be absent or
            null. Non-dict entries (SimDistill's switches, which the original config keeps here) are ignored.
        fuser: ConvFuser config, required when both encoders are present.
        decoder: ``{backbone, neck}``.
        heads: ``{object: CenterHead config, map: null}``.
        freeze: module name prefixes to freeze, e.g. ``[encoders.lidar]``.
    """

    def __init__(self, encoders, decoder, heads, fuser=None, freeze=(), data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.encoders = nn.ModuleDict()
        if encoders.get("camera") is not None:
            self.encoders["camera"] = build_camera_encoder(encoders["camera"])
        if encoders.get("lidar") is not None:
            lidar = encoders["lidar"]
            self.encoders["lidar"] = nn.ModuleDict({"voxelize": HardVoxelizer(**lidar["voxelize"]),
                                                    "backbone": MODELS.build(lidar["backbone"])})
        if not self.encoders:
            raise ValueError("model.encoders: configure at least one of camera, lidar")
        if len(self.encoders) > 1 and fuser is None:
            raise ValueError("model.fuser: a fuser is required when both camera and lidar encoders are configured")
        self.fuser = MODELS.build(fuser) if fuser is not None and len(self.encoders) > 1 else None
        self.decoder = build_decoder(decoder)
        self.heads = build_heads(heads)
        for prefix in freeze or ():
            set_frozen(self.get_submodule(prefix), True)

    def train(self, mode=True):
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    @property
    def sensors(self):
        return tuple(self.encoders.keys())

    @staticmethod
    def reads_points(model_cfg, training):
        """Whether a model of this config consumes LiDAR points (a LiDAR encoder, or LiDAR depth in the view
        transform); the data pipeline loads none otherwise."""
        encoders = model_cfg.get("encoders") or {}
        camera = encoders.get("camera")
        vtransform = (camera.get("vtransform") or {}).get("type") if isinstance(camera, dict) else None
        depth_input = vtransform is not None and getattr(MODELS.get(vtransform), "reads_points", False)
        return isinstance(encoders.get("lidar"), dict) or depth_input

    def extract_camera_features(self, batch):
        encoder = self.encoders["camera"]
        img = batch["img"]
        b, n = img.shape[:2]
        feats = encoder["backbone"](img.flatten(0, 1))
        feats = encoder["neck"](feats)
        if not isinstance(feats, torch.Tensor):
            feats = feats[0]
        feats = feats.view(b, n, *feats.shape[1:])
        bev, _ = encoder["vtransform"](feats, batch.get("points"), *(batch[k] for k in CAMERA_MATRICES),
                                       metas=batch.get("metas"))
        return bev

    def extract_lidar_features(self, points):
        encoder = self.encoders["lidar"]
        feats, coords, batch_size = encoder["voxelize"](points)
        return encoder["backbone"](feats, coords, batch_size)

    def extract_bev(self, batch):
        """Per-sensor BEV maps and the fused map, all [B, C, X, Y]."""
        out = OrderedDict()
        for sensor in self.encoders:
            if sensor == "camera":
                out["camera"] = self.extract_camera_features(batch)
            else:
                if batch.get("points") is None:
                    raise ValueError("batch['points']: this model has a LiDAR encoder and needs points")
                out["lidar"] = self.extract_lidar_features(batch["points"])
        out["fused"] = self.fuser(list(out.values())) if self.fuser is not None else next(iter(out.values()))
        return out

    def decode(self, fused):
        x = self.decoder["backbone"](fused)
        x = self.decoder["neck"](x)
        return x if isinstance(x, torch.Tensor) else x[0]

    def forward(self, mode="tensor", **batch):
        if mode == "loss":
            return self.loss(batch)
        if mode == "predict":
            return self.predict(batch)
        if mode == "tensor":
            return self.head_outputs(batch)
        raise ValueError(f"BEVFusion.forward: unknown mode {mode!r} (loss, predict or tensor)")

    def head_outputs(self, batch):
        return self.heads["object"](self.decode(self.extract_bev(batch)["fused"]))

    def loss(self, batch):
        preds = self.head_outputs(batch)
        losses = self.heads["object"].loss(batch["gt_bboxes_3d"], batch["gt_labels_3d"], preds)
        return {f"loss/object/{k}": v for k, v in losses.items()}

    def predict(self, batch):
        preds = self.head_outputs(batch)
        return attach_tokens(self.heads["object"].get_bboxes(preds, batch.get("metas")), batch.get("metas"))


def attach_tokens(results, metas):
    if metas is not None:
        for result, meta in zip(results, metas):
            result["token"] = meta["token"]
    return results
