"""Shared fixtures: a tiny generated nuScenes-format dataset with its info files; the pretrained-weights loader's
log messages."""
import os

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
REAL_SAMPLE = os.path.join(TESTS, "data")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """10 mini scenes x 2 key frames, 64x112 images, 1 sweep; converted to info files in the same folder."""
    from mmdet3d.datasets.nuscenes_converter import create_nuscenes_infos
    from mmdet3d.datasets.synthetic import generate

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate(root, version="v1.0-mini", seed=0, scenes=10, frames_per_scene=2, image_size=(64, 112), sweeps=1)
    create_nuscenes_infos(root, "v1.0-mini", max_sweeps=10)
    return root


@pytest.fixture
def warnings_logged(monkeypatch):
    """The messages the pretrained-weights loader logs (``mmdet3d.models.backbones.pretrained``), in order."""
    import mmdet3d.models.backbones.pretrained as pretrained
    messages = []
    monkeypatch.setattr(pretrained, "print_log", lambda msg, **kwargs: messages.append(msg))
    return messages
