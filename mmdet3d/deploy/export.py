"""The camera-only detector as one graph ``images [1, N, 3, H, W] -> raw CenterHead maps`` for ONNX export.

Exportable: a camera-only ``BEVFusion`` (BEVFusion-C) and the student of ``SimDistill`` (the teacher is not part of
the graph). The view transforms run with the calibration sample's rig baked in (``FixedRigLSS``) or with the rig as
further inputs (``DynamicRigLSS``, ``rig_inputs``); every op is a standard ONNX op (the GCM's deformable attention is
the ``grid_sample`` reference path).
"""
import copy
import hashlib
import json

import torch
from torch import nn

from mmdet3d.models.fusion_models import SimDistill
from mmdet3d.models.fusion_models.bevfusion import CAMERA_MATRICES
from mmdet3d.models.heads.centerpoint import REG_HEADS

from .fixed_rig import DYNAMIC_RIG_INPUTS, RIG_KEYS, DynamicRigLSS, FixedRigLSS

__all__ = ["HEAD_MAPS", "INPUT_NAME", "MIN_OPSET", "CameraOnlyDetector", "export_onnx", "compare_outputs",
           "outputs_to_preds", "exported_camera_encoder", "file_sha256", "RIG_METADATA", "CHECKPOINT_METADATA"]

HEAD_MAPS = ("heatmap", *REG_HEADS)
INPUT_NAME = "images"
MIN_OPSET = 16  # ScatterND with reduction and GridSample
RIG_METADATA = "simdistill.camera_rig"  # the baked-in rig, or DYNAMIC_RIG for a graph with the rig as inputs
DYNAMIC_RIG = "inputs"
CHECKPOINT_METADATA = "simdistill.checkpoint_sha256"


def exported_camera_encoder(model):
    """The camera encoder that makes the detections, after checking the model is camera-only at inference."""
    if isinstance(model, SimDistill):
        if model.official.student_depth_input:
            raise ValueError("model.official.student_depth_input: this student reads LiDAR depth and cannot be "
                             "exported camera-only")
        if model.bevformer:
            raise ValueError("model.encoders_student.camera.vtransform: the BEVFormer student's encoder has no ONNX "
                             "export (only LSS view transforms are exported)")
        return model.encoders_student["camera"]
    if "lidar" in model.encoders:
        raise ValueError("model.encoders.lidar: a model with a LiDAR encoder cannot be exported camera-only")
    return model.encoders["camera"]


class CameraOnlyDetector(nn.Module):
    """``forward(images[, img_aug_inverse, pixel_to_lidar, pixel_to_ego]) -> (task0.heatmap, task0.reg, ...,
    taskT.vel)``, the maps of ``CenterHead.forward`` in ``HEAD_MAPS`` order. Built on a copy of ``model`` whose view
    transforms are fixed to ``rig``, or, with ``rig=None``, take the rig as the further inputs (``rig_inputs``)."""

    def __init__(self, model, rig):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        encoder = exported_camera_encoder(self.model)
        self.input_names = [INPUT_NAME] + ([] if rig is not None else list(DYNAMIC_RIG_INPUTS))
        for key in ("vtransform", "vtransform2"):
            if key in encoder:
                encoder[key] = FixedRigLSS(encoder[key], rig) if rig is not None else DynamicRigLSS(encoder[key])
        head = (self.model.heads_student if isinstance(self.model, SimDistill) else self.model.heads)["object"]
        self.output_names = [f"task{t}.{name}" for t in range(len(head.num_classes)) for name in HEAD_MAPS]
        self.eval()

    def forward(self, images, *rig):
        batch = {"img": images, **dict.fromkeys(CAMERA_MATRICES)}
        batch.update({DYNAMIC_RIG_INPUTS[name]: value for name, value in zip(self.input_names[1:], rig)})
        preds = self.model.head_outputs(batch)
        return tuple(task[name] for task in preds for name in HEAD_MAPS)


def outputs_to_preds(names, arrays):
    """Flat named outputs back to ``CenterHead.forward``'s list of per-task dicts of tensors."""
    preds = {}
    for name, array in zip(names, arrays):
        task, head_map = name.split(".")
        preds.setdefault(int(task[len("task"):]), {})[head_map] = torch.as_tensor(array)
    return [preds[t] for t in sorted(preds)]


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_onnx(detector, images, rig, path, opset, checkpoint=None, inputs=()):
    """Writes ``detector`` (a ``CameraOnlyDetector``) traced at ``images`` (and ``inputs``, the rig inputs of a
    detector built without a rig) to ``path`` and checks it with ``onnx.checker``. The rig (``DYNAMIC_RIG`` when it
    is an input) and the checkpoint's SHA-256 go into the model's metadata, so an evaluation can refuse samples of
    another rig or another checkpoint. Returns the ``onnx.ModelProto``."""
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"--opset {opset}: at least {MIN_OPSET} is needed (ScatterND add reduction, GridSample)")
    with torch.no_grad():
        torch.onnx.export(detector, (images, *inputs), path, input_names=detector.input_names,
                          output_names=detector.output_names, opset_version=opset, dynamo=True, external_data=False,
                          verbose=False)
    model = onnx.load(path)
    rig_text = DYNAMIC_RIG if rig is None else json.dumps({k: rig[k][0].tolist() for k in RIG_KEYS})
    metadata = {RIG_METADATA: rig_text}
    if checkpoint is not None:
        metadata[CHECKPOINT_METADATA] = file_sha256(checkpoint)
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)
    onnx.checker.check_model(path, full_check=True)
    return model


def compare_outputs(names, reference, candidate):
    """``{name: (max abs difference, that over max |reference|)}`` of two lists of arrays/tensors."""
    result = {}
    for name, ref, out in zip(names, reference, candidate):
        ref, out = torch.as_tensor(ref).double(), torch.as_tensor(out).double()
        diff = (ref - out).abs().max().item()
        result[name] = (diff, diff / max(ref.abs().max().item(), 1e-12))
    return result
