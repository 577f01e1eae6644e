"""An exported camera-only detector run by onnxruntime behind the model interface ``tools/test.py`` evaluates: the
same data pipeline, the same ``CenterHead.get_bboxes`` post-processing and the same metric as the PyTorch model."""
import json
import os

import numpy as np
import torch
from mmengine.model import BaseModel

from mmdet3d.models.fusion_models.bevfusion import attach_tokens

from .export import CHECKPOINT_METADATA, DYNAMIC_RIG, INPUT_NAME, RIG_METADATA, file_sha256, outputs_to_preds
from .fixed_rig import RIG_KEYS, rig_inputs

__all__ = ["OnnxDetector", "RIG_TOLERANCE"]

RIG_TOLERANCE = 1e-4  # largest difference of a calibration matrix entry still treated as the same rig


class OnnxDetector(BaseModel):
    """``forward(mode="predict", **batch)`` of a detector exported by ``tools/export_onnx.py``.

    ``head`` is the model's ``CenterHead`` (only its post-processing runs). ``checkpoint``, when given, must be the
    checkpoint the file was exported from. Samples whose camera rig differs from the one baked into the graph are
    refused: their detections would be wrong without any error. A graph that takes the rig as inputs gets each
    sample's (``rig_inputs``).
    """

    def __init__(self, path, head, checkpoint=None, providers=("CPUExecutionProvider",)):
        super().__init__()
        import onnxruntime

        if not os.path.isfile(path):
            raise FileNotFoundError(f"--onnx: file not found: {path}")
        self.path = path
        self.session = onnxruntime.InferenceSession(path, providers=list(providers))
        self.output_names = [o.name for o in self.session.get_outputs()]
        metadata = self.session.get_modelmeta().custom_metadata_map
        if RIG_METADATA not in metadata:
            raise ValueError(f"{path}: no camera rig in the metadata (not written by tools/export_onnx.py)")
        self.dynamic = metadata[RIG_METADATA] == DYNAMIC_RIG
        self.rig = None if self.dynamic else {k: torch.tensor(v) for k, v in json.loads(metadata[RIG_METADATA]).items()}
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
            if metadata.get(CHECKPOINT_METADATA) != file_sha256(checkpoint):
                raise ValueError(f"{path}: was not exported from {checkpoint} (SHA-256 differs)")
        self.head = head.eval()

    def check_rig(self, batch, b):
        if self.dynamic:
            return
        token = (batch.get("metas") or [{}] * (b + 1))[b].get("token", b)
        for key in (k for k in RIG_KEYS if k in self.rig):  # graphs exported before camera2ego was kept lack it
            diff = (batch[key][b].detach().cpu().double() - self.rig[key].double()).abs().max().item()
            if diff > RIG_TOLERANCE:
                raise ValueError(f"{self.path}: sample {token} has another camera rig than the graph's ({key} differs "
                                 f"by {diff:.3g}); export with --calibration for this rig")

    def run(self, images, rig=None):
        """Raw head outputs (list of per-task dicts, as ``CenterHead.forward``) of images [1, N, 3, H, W]; ``rig``:
        the ``rig_inputs`` of the sample for a graph that takes them."""
        feeds = {INPUT_NAME: images, **(rig or {})}
        arrays = self.session.run(self.output_names, {k: np.ascontiguousarray(v.detach().cpu().numpy(),
                                                                              dtype=np.float32)
                                                      for k, v in feeds.items()})
        return outputs_to_preds(self.output_names, arrays)

    def forward(self, mode="predict", **batch):
        if mode != "predict":
            raise ValueError(f"OnnxDetector.forward: only mode 'predict' runs an exported graph, got {mode!r}")
        results = []
        for b in range(batch["img"].shape[0]):
            self.check_rig(batch, b)
            rig = rig_inputs({k: batch[k][b:b + 1] for k in RIG_KEYS}) if self.dynamic else None
            results += self.head.get_bboxes(self.run(batch["img"][b:b + 1], rig))
        return attach_tokens(results, batch.get("metas"))
