"""2D-only backbone pretraining on generated images (``mmdet3d.apis.pretrain``, ``tools/pretrain_backbone.py``) and
the way its checkpoint reaches teacher and student through ``pretrained_camera``."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.tools import load_tool
import mmdet3d.models  # noqa: F401  (registers the models)
from mmdet3d.apis.pretrain import crop_like_test_pipeline, segmentation_scores
from mmdet3d.datasets.pipelines.transforms_2d import ImageAug3D
from mmdet3d.datasets.synthetic.render import VEHICLE, CameraRenderer
from mmdet3d.datasets.synthetic.rig import build_rig
from mmdet3d.datasets.synthetic.road import RoadFrame
from mmdet3d.datasets.synthetic.segmentation import SEGMENTATION_CLASSES, segmentation_frames
from mmdet3d.registry import MODELS
from mmdet3d.utils.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--image_size", "[32, 96]", "--source_image_size", "[54, 96]"]


def tool_main(argv):
    return load_tool("pretrain_backbone").main(argv)


def test_owner_map_marks_exactly_the_pixels_the_box_changes():
    _, cameras = build_rig((90, 160))
    renderer = CameraRenderer(cameras[0], (90, 160))
    road = RoadFrame((0.0, 0.0), 0.0, 0.0)
    box = np.array([[12.0, 1.0, 0.87, 4.6, 1.95, 1.7, 0.4]])
    with_box, _, _, owner = renderer.render(box, np.array([[0.9, 0.1, 0.1]]), np.array([VEHICLE]), np.zeros(3),
                                            road, 3, np.random.default_rng(0), with_owner=True)
    empty, _, _ = renderer.render(np.zeros((0, 7)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(3), road, 3,
                                  np.random.default_rng(0))
    changed = np.abs(with_box.astype(int) - empty).sum(-1) > 0
    assert owner.shape == (90, 160) and set(np.unique(owner)) == {-1, 0}
    assert changed.sum() > 100 and np.array_equal(owner == 0, changed)


def test_segmentation_frames_label_objects_by_class_and_are_seeded():
    frames = list(segmentation_frames(4, 1, 2, (54, 96)))
    assert len(frames) == 2
    images, labels = frames[0]
    assert images.shape == (6, 54, 96, 3) and images.dtype == np.uint8 and labels.shape == (6, 54, 96)
    assert labels.min() >= 0 and labels.max() < len(SEGMENTATION_CLASSES)
    assert 0.4 < (labels == 0).mean() < 0.98  # mostly ground and sky, but objects too
    again = next(segmentation_frames(4, 1, 2, (54, 96)))
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
    other = next(segmentation_frames(5, 1, 2, (54, 96)))
    assert not np.array_equal(other[1], labels)


def test_crop_equals_the_test_pipeline():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    labels = rng.integers(0, 12, (180, 320))
    ours, lab = crop_like_test_pipeline(image, labels, (96, 256))
    aug = ImageAug3D(final_dim=[96, 256], resize_lim=[0.8, 0.8], bot_pct_lim=[0.0, 0.0], rot_lim=[0.0, 0.0],
                     rand_flip=False, is_train=False)
    expected = np.asarray(aug({"img": [Image.fromarray(image)]})["img"][0])
    assert np.array_equal(ours, expected)
    # labels by nearest neighbour: row 95 of the crop is source row ~ (48 + 95 + 0.5) / 0.8
    assert lab.shape == (96, 256) and lab[95, 0] == labels[int((48 + 95 + 0.5) / 0.8), 0]


def test_segmentation_scores_by_hand():
    class Fixed(torch.nn.Module):
        def forward(self, x):  # predicts class 1 on the left half, background elsewhere
            out = torch.zeros(x.shape[0], len(SEGMENTATION_CLASSES), *x.shape[2:])
            out[:, 1, :, : x.shape[3] // 2] = 1.0
            out[:, 0, :, x.shape[3] // 2:] = 1.0
            return out
    labels = torch.zeros(1, 2, 4, dtype=torch.int64)
    labels[0, :, :1] = 1  # truth: class 1 in the first column
    scores = segmentation_scores(Fixed(), torch.zeros(1, 2, 4, 3, dtype=torch.uint8), labels)
    # class 1: inter 2, union 4; background: inter 4, union 6
    assert scores["pixel_acc"] == pytest.approx(6 / 8)
    assert scores["object_iou"] == pytest.approx(0.5)
    assert scores["miou"] == pytest.approx((0.5 + 4 / 6) / 2)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pretrain") / "r18.pth")
    rc = tool_main(["configs/synthetic/det/camera_lss.yaml", "--out", path, "--iters", "2", "--scenes", "1",
                    "--frames-per-scene", "1", "--batch", "2", *SMALL])
    assert rc == 0 and os.path.isfile(path)
    return path


@pytest.mark.parametrize("config,encoder", [("camera_lss.yaml", "encoders"), ("teacher.yaml", "encoders"),
                                            ("baseline.yaml", "encoders_student")])
def test_pretrained_camera_reaches_teacher_and_students(pretrained, config, encoder):
    state = torch.load(pretrained, weights_only=True)["state_dict"]
    overrides = ["--pretrained_camera", pretrained]
    if config == "baseline.yaml":  # a student without a teacher checkpoint keeps the pretrained backbone
        overrides += ["--model.official", "{random_student_init: true}"]
    cfg = load_config(f"configs/synthetic/det/{config}", overrides)
    model = MODELS.build(cfg.model)
    backbone = getattr(model, encoder)["camera"]["backbone"].state_dict()
    assert state.keys() == {f"backbone.{k}" for k in backbone}
    for k, v in backbone.items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
    fresh = MODELS.build(load_config(f"configs/synthetic/det/{config}", overrides[2:]).model)
    assert not torch.equal(getattr(fresh, encoder)["camera"]["backbone"].conv1.weight, state["backbone.conv1.weight"])


def test_tool_errors_are_one_line(tmp_path, capsys):
    rc = tool_main(["configs/synthetic/det/lidar.yaml", "--out", str(tmp_path / "x.pth")])
    assert rc == 2 and "model.encoders.camera" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
    rc = tool_main(["configs/synthetic/det/camera_lss.yaml", "--out", str(tmp_path / "x.pth"), "--iters", "0"])
    assert rc == 2 and "must be positive" in capsys.readouterr().err
