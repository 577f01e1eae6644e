"""Deployment of the camera-only detectors: ONNX export with a fixed camera rig or the rig as inputs, and evaluation
with onnxruntime
(``onnx`` and ``onnxruntime`` are imported only where they are used: the ``deploy`` extra)."""
from .export import CameraOnlyDetector, compare_outputs, export_onnx, outputs_to_preds
from .fixed_rig import DYNAMIC_RIG_INPUTS, RIG_KEYS, DynamicRigLSS, FixedRigLSS, rig_inputs
from .runtime import OnnxDetector

__all__ = ["CameraOnlyDetector", "DYNAMIC_RIG_INPUTS", "DynamicRigLSS", "FixedRigLSS", "OnnxDetector", "RIG_KEYS",
           "compare_outputs", "export_onnx", "outputs_to_preds", "rig_inputs"]
