"""Checkpoint files: atomic writes, ``latest.pth``, and checked loading with one-line errors.

Every checkpoint is read with ``torch.load(weights_only=True)``: files a user hands in (``load_from``, ``test.py``)
and the run's own files alike. The run's own files load that way because they are written through
``mmdet3d.utils.checkpoint_compat`` (see ``WeightsOnlyCheckpointHook``).
"""
import contextlib
import hashlib
import logging
import os
import pickle
import re
import shutil
import tempfile

import torch
from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmdet3d.utils.checkpoint_compat import from_weights_only

ATOMIC_BACKEND = "simdistill_atomic_local"
LATEST = "latest.pth"
SHOWN_KEYS = 3


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line naming the file."""


def _fsync_dir(directory):
    # The rename is durable only once the directory entry is on disk; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(data, path):
    """Writes ``data`` to a temporary file next to ``path``, fsyncs it and renames it over ``path``: a crash at any
    point leaves either the old file or the new one, never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def link_latest(src, latest):
    """Points ``latest`` at the complete file ``src`` atomically (a hard link, or a copy where links fail)."""
    tmp = f"{latest}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, latest)
    _fsync_dir(os.path.dirname(os.path.abspath(latest)))


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put``/``put_text`` (used by the checkpoint hook)."""

    def put(self, obj, filepath):
        atomic_write_bytes(obj, str(filepath))

    def put_text(self, obj, filepath, encoding="utf-8"):
        atomic_write_bytes(obj.encode(encoding), str(filepath))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_checkpoint(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with mmengine's structures restored; one-line errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{path}: refused by weights-only loading (it pickles {found.group(1)}); only "
                                  "tensors and plain containers are loaded from checkpoint files") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError: "
                              f"{reason.group(1).strip() if reason else _first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, zipfile/OSError... for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    return from_weights_only(checkpoint) if isinstance(checkpoint, dict) else checkpoint


def extract_state_dict(checkpoint, path):
    """The model weights of an mmengine/mmcv checkpoint (``state_dict``) or of a bare state dict."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        keys = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: no model weights found (expected a 'state_dict' entry; top level: {keys})")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def weights_sha(path):
    """A 16-hex digest of a checkpoint's model weights (names, dtypes, shapes, values), blind to optimizer state and
    metadata: two trainings that ended at the same weights get the same digest."""
    state_dict = extract_state_dict(read_checkpoint(path), path)
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def _listing(keys):
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... (+{len(keys) - SHOWN_KEYS})" if len(keys) > SHOWN_KEYS else "")


def compare_state_dicts(model_state, state_dict):
    """Missing keys, unexpected keys and shape mismatches (``key: checkpoint [..] vs model [..]``), in key order."""
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    shapes = [f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
              for k, v in model_state.items()
              if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def describe_mismatch(missing, unexpected, shapes):
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} with another shape ({_listing(shapes)})")
    return "; ".join(parts)


def load_state_dict_checked(model, state_dict, path, strict=True):
    """Loads ``state_dict`` into ``model``.

    ``strict``: any missing/unexpected key or shape mismatch is a ``CheckpointError``. Otherwise (``load_from`` during
    training, e.g. a teacher checkpoint into the distillation model) the common keys are loaded and the rest logged;
    a shape mismatch or a checkpoint with no key in common is still an error.
    """
    model = model.module if is_model_wrapper(model) else model
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), state_dict)
    name = type(model).__name__
    if strict and (missing or unexpected or shapes):
        raise CheckpointError(f"{path}: does not fit {name}: {describe_mismatch(missing, unexpected, shapes)}")
    if shapes:
        raise CheckpointError(f"{path}: does not fit {name}: {describe_mismatch([], [], shapes)}")
    if len(missing) == len(model.state_dict()) and model.state_dict():
        raise CheckpointError(f"{path}: no key in common with {name}: {describe_mismatch(missing, unexpected, [])}")
    model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        print_log(f"{path}: partially loaded into {name}: {describe_mismatch(missing, unexpected, [])}",
                  logger="current", level=logging.WARNING)
    return missing, unexpected


def load_checkpoint(model, path, strict=True, map_location="cpu"):
    """Reads ``path`` (weights-only) and loads its weights into ``model``; returns the checkpoint dict."""
    checkpoint = read_checkpoint(path, map_location=map_location)
    load_state_dict_checked(model, extract_state_dict(checkpoint, path), path, strict=strict)
    return checkpoint
