"""Atomic checkpoint files and checked loading with one-line errors."""
import builtins
import os

import pytest
import torch
from mmengine.fileio.backends import LocalBackend
from torch import nn

from mmdet3d.apis import build_train_runner
from mmdet3d.utils.checkpoint import (AtomicLocalBackend, CheckpointError, atomic_write_bytes, link_latest,
                                     load_checkpoint, read_checkpoint, weights_sha)


class _BrokenWriter:
    """A file whose writes stop half-way with an error, as if the process died while writing."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise KeyboardInterrupt("killed while writing")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "latest.pth")
    atomic_write_bytes(b"old complete checkpoint", path)
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _BrokenWriter(real_fdopen(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        AtomicLocalBackend().put(b"new checkpoint " * 100, path)
    monkeypatch.undo()
    assert open(path, "rb").read() == b"old complete checkpoint"
    assert os.listdir(tmp_path) == ["latest.pth"]  # the partial temp file is gone


def test_plain_writes_would_corrupt_the_file(tmp_path, monkeypatch):
    # The failure the atomic write prevents: mmengine's own local backend truncates the file first.
    path = str(tmp_path / "latest.pth")
    LocalBackend().put(b"old complete checkpoint", path)
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: _BrokenWriter(real_open(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        LocalBackend().put(b"new checkpoint " * 100, path)
    monkeypatch.undo()
    assert open(path, "rb").read() != b"old complete checkpoint"


def test_a_crash_while_saving_leaves_latest_loadable(tmp_path, toy_config, monkeypatch):
    # max_keep_ckpts=1: mmengine deletes epoch_1.pth before writing epoch_2.pth; latest.pth must survive both.
    run_dir = str(tmp_path / "run")
    runner = build_train_runner(toy_config(max_epochs=2, checkpoint_config={"interval": 1, "max_keep_ckpts": 1}),
                                run_dir)
    real_save = torch.save
    saves = []

    def save_then_die(obj, f, *args, **kwargs):
        saves.append(obj["meta"]["epoch"])
        if obj["meta"]["epoch"] == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed while saving epoch 2")

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    monkeypatch.undo()
    assert saves == [1, 2]
    assert not os.path.exists(os.path.join(run_dir, "epoch_1.pth"))  # already rotated out
    assert not os.path.exists(os.path.join(run_dir, "epoch_2.pth"))
    checkpoint = read_checkpoint(os.path.join(run_dir, "latest.pth"))
    assert checkpoint["meta"]["epoch"] == 1 and checkpoint["meta"]["iter"] == 2


def test_latest_is_the_newest_checkpoint_and_old_ones_rotate(tmp_path, toy_config):
    run_dir = tmp_path / "run"
    build_train_runner(toy_config(max_epochs=3, checkpoint_config={"interval": 1, "max_keep_ckpts": 2}),
                       str(run_dir)).train()
    assert sorted(p.name for p in run_dir.glob("*.pth")) == ["epoch_2.pth", "epoch_3.pth", "latest.pth"]
    assert open(run_dir / "latest.pth", "rb").read() == open(run_dir / "epoch_3.pth", "rb").read()
    assert read_checkpoint(str(run_dir / "latest.pth"))["meta"]["epoch"] == 3


def test_link_latest_replaces_an_existing_link(tmp_path):
    a, b, latest = tmp_path / "a", tmp_path / "b", tmp_path / "latest.pth"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    link_latest(str(a), str(latest))
    link_latest(str(b), str(latest))
    a.unlink()
    assert latest.read_bytes() == b"B"


class Small(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.backbone = nn.Linear(2, width)
        self.head = nn.Linear(width, 1)


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    if content == "truncated":
        torch.save({"state_dict": Small().state_dict()}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(Small(), str(path))
    assert_one_line(error, str(path), "not a readable checkpoint")


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_checkpoint(Small(), str(tmp_path / "nowhere.pth"))


def test_mismatched_checkpoint_names_the_first_keys(tmp_path):
    state = Small(width=4).state_dict()
    state["neck.weight"] = torch.zeros(1)
    del state["head.bias"]
    path = tmp_path / "other.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(Small(width=3), str(path))
    assert_one_line(error, str(path), "does not fit Small", "1 missing (head.bias)", "1 unexpected (neck.weight)",
                    "3 with another shape (backbone.weight: checkpoint [4, 2] vs model [3, 2]")


def test_many_mismatches_show_the_first_three(tmp_path):
    path = tmp_path / "empty_model.pth"
    torch.save({"state_dict": {f"k{i}": torch.zeros(1) for i in range(7)} | Small().state_dict()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(Small(), str(path))
    assert_one_line(error, "7 unexpected (k0, k1, k2, ... (+4))")


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Small().state_dict(), "meta": Payload()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(Small(), str(path))
    assert_one_line(error, str(path), "refused by weights-only loading", "open")
    assert not marker.exists()


def test_partial_loading_for_load_from(tmp_path):
    teacher = Small()
    path = tmp_path / "teacher.pth"
    # The backbone only, saved from a DDP-wrapped model: the 'module.' prefix is stripped.
    torch.save({"state_dict": {"module.backbone." + k: v for k, v in teacher.backbone.state_dict().items()}}, path)
    student = Small()
    load_checkpoint(student, str(path), strict=False)
    assert torch.equal(student.backbone.weight, teacher.backbone.weight)
    assert not torch.equal(student.head.weight, teacher.head.weight)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(Small(), str(path), strict=True)
    with pytest.raises(CheckpointError, match="another shape"):
        load_checkpoint(Small(width=5), str(path), strict=False)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(CheckpointError, match="no key in common"):
        load_checkpoint(Small(), str(unrelated), strict=False)


def test_weights_sha_sees_the_weights_only(tmp_path):
    weights = {"conv.weight": torch.arange(6.0).reshape(2, 3), "bn.num_batches_tracked": torch.tensor(3)}
    torch.save({"state_dict": weights, "meta": {"epoch": 1}}, tmp_path / "a.pth")
    torch.save({"state_dict": dict(weights), "meta": {"epoch": 2}, "optimizer": {"lr": 0.1}}, tmp_path / "b.pth")
    torch.save(weights, tmp_path / "bare.pth")
    nudged = dict(weights, **{"conv.weight": weights["conv.weight"] + 1e-6})
    torch.save({"state_dict": nudged}, tmp_path / "c.pth")
    retyped = dict(weights, **{"conv.weight": weights["conv.weight"].double()})
    torch.save({"state_dict": retyped}, tmp_path / "d.pth")
    digests = {name: weights_sha(tmp_path / f"{name}.pth") for name in ("a", "b", "bare", "c", "d")}
    assert digests["a"] == digests["b"] == digests["bare"] and len(digests["a"]) == 16
    assert len({digests["a"], digests["c"], digests["d"]}) == 3
