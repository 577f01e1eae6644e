"""ONNX export of the camera-only detectors (tiny configs): onnxruntime against PyTorch, the same boxes after
post-processing, a standard-op graph, and one-line refusals of what cannot be exported camera-only.

onnx and onnxruntime are pinned test dependencies: without them these tests fail at import, they do not skip."""
import onnx
import onnxruntime  # noqa: F401  (a missing runtime must fail here, not skip)
import pytest
import torch

from helpers.batchnorm import calibrate_batchnorm
from helpers.fake_batch import make_batch, tiny_config
from mmdet3d.deploy import (RIG_KEYS, CameraOnlyDetector, DynamicRigLSS, FixedRigLSS, OnnxDetector, compare_outputs,
                            export_onnx, rig_inputs)
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
    def __init__(self, model, path, dynamic=False):
        self.model = model
        self.batch = make_batch(1, with_points=False)
        rig = None if dynamic else rig_of(self.batch)
        self.detector = CameraOnlyDetector(model, rig)
        self.path = str(path)
        inputs = tuple(rig_inputs(self.batch)[name] for name in self.detector.input_names[1:])
        self.onnx = export_onnx(self.detector, self.batch["img"], rig, self.path, OPSET, inputs=inputs)


@pytest.fixture(scope="module")
def camera_lss(tmp_path_factory):
    return Exported(build("camera_lss.yaml"), tmp_path_factory.mktemp("onnx") / "camera_lss.onnx")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    model = build("simdistill.yaml")
    assert hasattr(model, "deformAttn")
    return Exported(model, tmp_path_factory.mktemp("onnx") / "simdistill.onnx")


@pytest.fixture(scope="module")
def dynamic_student(tmp_path_factory):
    model = build("simdistill.yaml", "--camera_vtransform.depth_prior", "above_ground")
    return Exported(model, tmp_path_factory.mktemp("onnx") / "simdistill_dynamic.onnx", dynamic=True)


def another_rig(batch):
    """The batch with its cameras 0.3 m higher and its images cropped 2 pixels further right."""
    other = dict(batch, camera2lidar=batch["camera2lidar"].clone(), camera2ego=batch["camera2ego"].clone(),
                 img_aug_matrix=batch["img_aug_matrix"].clone())
    other["camera2lidar"][..., 2, 3] += 0.3
    other["camera2ego"][..., 2, 3] += 0.3
    other["img_aug_matrix"][..., 0, 3] -= 2.0
    return other


def ops(exported):
    return {node.op_type for node in exported.onnx.graph.node}


def run_onnxruntime(exported, images):
    session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    return session.run(exported.detector.output_names, {"images": images.numpy()})


@pytest.mark.parametrize("prior", [None, "above_ground"])
def test_fixed_and_dynamic_rig_lss_equal_the_view_transform_with_its_matrices(prior):
    model = build("camera_lss.yaml", "--camera_vtransform.depth_prior", str(prior).lower() if prior else "null")
    vtransform = model.encoders["camera"]["vtransform"]
    batch = make_batch(1, with_points=False)
    feats = torch.randn(1, 6, vtransform.in_channels, *vtransform.feature_size)
    matrices = [batch[k] for k in ("camera2ego", "lidar2ego", "lidar2camera", "lidar2image", "camera_intrinsics",
                                   "camera2lidar", "img_aug_matrix", "lidar_aug_matrix")]
    with torch.no_grad():
        expected, _ = vtransform(feats, None, *matrices, metas=None)
        fixed, depth = FixedRigLSS(vtransform, rig_of(batch))(feats)
        inputs = rig_inputs(batch)
        # the rig inputs in the places of camera2ego, camera2lidar and img_aug_matrix (DYNAMIC_RIG_INPUTS)
        dynamic_matrices = [inputs["pixel_to_ego"], *matrices[1:5], inputs["pixel_to_lidar"],
                            inputs["img_aug_inverse"], matrices[7]]
        dynamic, dynamic_depth = DynamicRigLSS(vtransform)(feats, None, *dynamic_matrices)
    assert expected.abs().max() > 0 and vtransform.depth_prior == prior
    assert (depth < 1e-12).any() == (prior is not None)
    torch.testing.assert_close(fixed, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dynamic, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dynamic_depth, depth)


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


def test_a_graph_with_the_rig_as_inputs_follows_another_rig(dynamic_student):
    exported = dynamic_student
    assert [i.name for i in exported.onnx.graph.input] == ["images", "img_aug_inverse", "pixel_to_lidar",
                                                           "pixel_to_ego"]
    batch = another_rig(exported.batch)
    session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    feeds = {"images": batch["img"], **rig_inputs(batch)}
    outputs = session.run(exported.detector.output_names, {k: v.numpy() for k, v in feeds.items()})
    reference = reference_outputs(exported.model, batch)
    assert max(d[1] for d in compare_outputs(exported.detector.output_names, reference, outputs).values()) < TOLERANCE
    # ... and differs from the export sample's outputs: the rig inputs are used
    original = reference_outputs(exported.model, exported.batch)
    assert max(d[1] for d in compare_outputs(exported.detector.output_names, original, outputs).values()) > 1e-3
    head = exported.model.heads_student["object"]
    with torch.no_grad():
        expected = exported.model.predict(batch)
    got = OnnxDetector(exported.path, head)(mode="predict", **batch)
    # The pooling sums in another order: scores within ~1e-6 may swap places in the ranking, so compare the boxes
    # as sets (ordered by label and centre); the random head's sizes (exp of its dim maps, up to ~30 m) turn the
    # raw maps' 1e-4 into up to ~0.5 % of a size.
    def ordered(result):
        rows = torch.cat([result["labels_3d"][:, None].double(), result["boxes_3d"].double()], 1)
        keys = [tuple(round(v, 2) for v in row[:3].tolist()) for row in rows]
        return rows[sorted(range(len(rows)), key=keys.__getitem__)]
    assert len(expected[0]["labels_3d"]) > 0
    torch.testing.assert_close(ordered(got[0]), ordered(expected[0]), rtol=1e-2, atol=1e-3)


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
