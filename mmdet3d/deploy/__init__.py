"""Deployment of the camera-only detectors: ONNX export with a fixed camera rig and evaluation with onnxruntime
(``onnx`` and ``onnxruntime`` are imported only where they are used: the ``deploy`` extra)."""
from .export import CameraOnlyDetector, compare_outputs, export_onnx, outputs_to_preds
from .fixed_rig import RIG_KEYS, FixedRigLSS
from .runtime import OnnxDetector

__all__ = ["CameraOnlyDetector", "FixedRigLSS", "OnnxDetector", "RIG_KEYS", "compare_outputs", "export_onnx",
           "outputs_to_preds"]
