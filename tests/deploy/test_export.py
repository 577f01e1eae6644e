"""ONNX export of the camera-only detectors (tiny configs): onnxruntime against PyTorch, the same boxes after
post-processing, a standard-op graph, and one-line refusals of what cannot be exported camera-only.

onnx and onnxruntime are pinned test dependencies: without them these tests fail at import, they do not skip."""
import onnx
import onnxruntime  # noqa: F401  (a missing runtime must fail here, not skip)
import pytest
import torch

from helpers.batchnorm import calibrate_batchnorm
from helpers.fake_batch import make_batch, tiny_config
from mmdet3d.deploy import RIG_KEYS, CameraOnlyDetector, FixedRigLSS, OnnxDetector, compare_outputs, export_onnx
from mmdet3d.deploy.export import HEAD_MAPS, exported_camera_encoder
from mmdet3d.registry import MODELS

OPSET = 18
TOLERANCE = 1e-4
TEACHER_PREFIXES = ("model.encoders.", "model.fuser.", "model.decoder.", "model.heads.")


def build(name, *overrides, calibrated=True):
    import mmdet3d.models  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model = MODELS.build(tiny_config(name, *overrides).model.to_dict())
    if not calibrated:
        return model.eval()
    return calibrate_batchnorm(model)


def rig_of(batch):
    return {k: batch[k] for k in RIG_KEYS}


def reference_outputs(model, batch):
    with torch.no_grad():
        return [task[name] for task in model.head_outputs(batch) for name in HEAD_MAPS]


class Exported:
    def __init__(self, model, path):
        self.model = model
        self.batch = make_batch(1, with_points=False)
        self.detector = CameraOnlyDetector(model, rig_of(self.batch))
        self.path = str(path)
        self.onnx = export_onnx(self.detector, self.batch["img"], rig_of(self.batch), self.path, OPSET)


@pytest.fixture(scope="module")
def camera_lss(tmp_path_factory):
    return Exported(build("camera_lss.yaml"), tmp_path_factory.mktemp("onnx") / "camera_lss.onnx")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    model = build("simdistill.yaml")
    assert hasattr(model, "deformAttn")
    return Exported(model, tmp_path_factory.mktemp("onnx") / "simdistill.onnx")


def ops(exported):
    return {node.op_type for node in exported.onnx.graph.node}


def run_onnxruntime(exported, images):
    session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    return session.run(exported.detector.output_names, {"images": images.numpy()})


@pytest.mark.parametrize("prior", [None, "above_ground"])
def test_fixed_rig_lss_equals_the_view_transform_with_its_matrices(prior):
    model = build("camera_lss.yaml", "--camera_vtransform.depth_prior", str(prior).lower() if prior else "null")
    vtransform = model.encoders["camera"]["vtransform"]
    batch = make_batch(1, with_points=False)
    feats = torch.randn(1, 6, vtransform.in_channels, *vtransform.feature_size)
    matrices = [batch[k] for k in ("camera2ego", "lidar2ego", "lidar2camera", "lidar2image", "camera_intrinsics",
                                   "camera2lidar", "img_aug_matrix", "lidar_aug_matrix")]
    with torch.no_grad():
        expected, _ = vtransform(feats, None, *matrices, metas=None)
        fixed, depth = FixedRigLSS(vtransform, rig_of(batch))(feats)
    assert expected.abs().max() > 0 and vtransform.depth_prior == prior
    assert (depth < 1e-12).any() == (prior is not None)
    torch.testing.assert_close(fixed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["camera_lss", "student"])
def test_graph_is_checked_and_uses_standard_ops_only(which, request):
    exported = request.getfixturevalue(which)
    onnx.checker.check_model(exported.onnx, full_check=True)
    assert {node.domain for node in exported.onnx.graph.node} <= {"", "ai.onnx"}
    scatters = [n for n in exported.onnx.graph.node if n.op_type == "ScatterND"]
    assert scatters and all(onnx.helper.get_attribute_value(a) == b"add"
                            for n in scatters for a in n.attribute if a.name == "reduction")
    assert [i.name for i in exported.onnx.graph.input] == ["images"]
    assert [d.dim_value for d in exported.onnx.graph.input[0].type.tensor_type.shape.dim] == [1, 6, 3, 32, 88]


def test_student_graph_holds_the_gcm_as_grid_sample_and_no_teacher(student):
    assert "GridSample" in ops(student)
    names = [init.name for init in student.onnx.graph.initializer]
    assert any(name.startswith("model.deformAttn.") for name in names)
    assert not [name for name in names if name.startswith(TEACHER_PREFIXES)]


@pytest.mark.parametrize("which", ["camera_lss", "student"])
def test_onnxruntime_matches_pytorch_on_every_head_output(which, request):
    exported = request.getfixturevalue(which)
    images = torch.randn(1, 6, 3, 32, 88, generator=torch.Generator().manual_seed(1))
    batch = dict(exported.batch, img=images)
    diffs = compare_outputs(exported.detector.output_names, reference_outputs(exported.model, batch),
                            run_onnxruntime(exported, images))
    assert len(diffs) == 6 * len(HEAD_MAPS)
    worst = max(diffs.values(), key=lambda d: d[1])
    assert worst[1] < TOLERANCE, diffs


@pytest.mark.parametrize("which", ["camera_lss", "student"])
def test_post_processed_boxes_are_those_of_the_pytorch_model(which, request):
    exported = request.getfixturevalue(which)
    head = (exported.model.heads_student if which == "student" else exported.model.heads)["object"]
    batch = exported.batch
    with torch.no_grad():
        expected = exported.model.predict(batch)
    got = OnnxDetector(exported.path, head)(mode="predict", **batch)
    assert len(expected[0]["boxes_3d"]) > 0
    assert got[0]["token"] == expected[0]["token"]
    assert torch.equal(got[0]["labels_3d"], expected[0]["labels_3d"])
    torch.testing.assert_close(got[0]["boxes_3d"], expected[0]["boxes_3d"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0]["scores_3d"], expected[0]["scores_3d"], rtol=1e-5, atol=1e-6)


def test_a_sample_of_another_rig_is_refused(camera_lss):
    batch = dict(camera_lss.batch, camera2lidar=camera_lss.batch["camera2lidar"].clone())
    batch["camera2lidar"][0, 2, 0, 3] += 0.05
    detector = OnnxDetector(camera_lss.path, camera_lss.model.heads["object"])
    with pytest.raises(ValueError, match=r"sample sample0 has another camera rig .*camera2lidar"):
        detector(mode="predict", **batch)


def test_a_lidar_model_cannot_be_exported_camera_only():
    with pytest.raises(ValueError, match=r"^model\.encoders\.lidar: a model with a LiDAR encoder cannot be exported"):
        exported_camera_encoder(build("teacher.yaml", calibrated=False))


def test_a_student_fed_lidar_depth_cannot_be_exported():
    model = build("simdistill.yaml", "--model.official", "{student_depth_input: true}", calibrated=False)
    with pytest.raises(ValueError, match=r"^model\.official\.student_depth_input: .*cannot be exported"):
        CameraOnlyDetector(model, rig_of(make_batch(1, with_points=False)))


def test_too_low_an_opset_is_refused(camera_lss, tmp_path):
    with pytest.raises(ValueError, match=r"^--opset 13: at least 16"):
        export_onnx(camera_lss.detector, camera_lss.batch["img"], rig_of(camera_lss.batch), str(tmp_path / "x.onnx"),
                    13)
