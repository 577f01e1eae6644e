"""Resume under ``torch.load(weights_only=True)`` (torch >= 2.6): the shim of ``mmdet3d.utils.checkpoint_compat``."""
import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmdet3d.apis import build_train_runner
from mmdet3d.utils.checkpoint import read_checkpoint
from mmdet3d.utils.checkpoint_compat import from_weights_only, to_weights_only


def test_mmengine_message_hub_alone_fails_weights_only_loading(tmp_path, toy_config):
    # The problem being worked around, in this environment: mmengine's message hub in a checkpoint.
    runner = build_train_runner(toy_config(max_epochs=1), str(tmp_path / "run"))
    runner.train()
    buffer = io.BytesIO()
    torch.save({"message_hub": runner.message_hub.state_dict()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(buffer, weights_only=True)


def test_run_checkpoints_load_weights_only_and_resume_the_message_hub(tmp_path, toy_config):
    run_dir = str(tmp_path / "run")
    first = build_train_runner(toy_config(max_epochs=1), run_dir)
    first.train()
    latest = os.path.join(run_dir, "latest.pth")
    raw = torch.load(latest, weights_only=True)  # plain torch, nothing allow-listed
    assert set(raw) >= {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}

    saved_losses = first.message_hub.get_scalar("train/loss").data[0].copy()
    second = build_train_runner(toy_config(max_epochs=2), run_dir, resume=True)
    second.train()
    assert second.epoch == 2 and second.iter == 4
    resumed_losses = second.message_hub.get_scalar("train/loss").data[0]
    assert isinstance(second.message_hub.get_scalar("train/loss"), HistoryBuffer)
    np.testing.assert_array_equal(resumed_losses[: len(saved_losses)], saved_losses)
    assert len(resumed_losses) == len(saved_losses) + 2  # epoch 2 appended to the resumed history


def test_round_trip_of_mmengine_structures():
    state = {
        "meta": {"epoch": 3, "seed": np.int64(7), "dataset_meta": {"classes": np.array(["car", "bus"])}},
        "message_hub": {
            "log_scalars": OrderedDict(loss=HistoryBuffer([1.5, np.float32(0.5)], [1, 2], max_length=10)),
            "runtime_info": OrderedDict(iter=np.int64(12), lr=np.float64(1e-3), grid=np.arange(6).reshape(2, 3)),
            "resumed_keys": OrderedDict(loss=True, iter=True),
        },
        "state_dict": OrderedDict(w=torch.ones(2)),
    }
    expected_log = state["message_hub"]["log_scalars"]["loss"].data
    buffer = io.BytesIO()
    torch.save(to_weights_only(state), buffer)
    buffer.seek(0)
    restored = from_weights_only(torch.load(buffer, weights_only=True))
    history = restored["message_hub"]["log_scalars"]["loss"]
    assert isinstance(history, HistoryBuffer) and history.max_length == 10
    np.testing.assert_array_equal(history.data[0], expected_log[0])
    np.testing.assert_array_equal(history.data[1], expected_log[1])
    assert history.mean() == pytest.approx(2.0 / 3.0)  # sum of values over sum of counts
    info = restored["message_hub"]["runtime_info"]
    assert info["iter"] == 12 and info["lr"] == 1e-3
    assert info["grid"].dtype == np.arange(6).dtype and info["grid"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert restored["meta"]["dataset_meta"]["classes"].tolist() == ["car", "bus"]
    assert isinstance(restored["message_hub"]["log_scalars"], OrderedDict)
    assert torch.equal(restored["state_dict"]["w"], torch.ones(2))


def test_read_checkpoint_leaves_foreign_checkpoints_alone(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"epoch": 1, "note": "mmcv"}}, path)
    assert read_checkpoint(str(path))["meta"] == {"epoch": 1, "note": "mmcv"}
