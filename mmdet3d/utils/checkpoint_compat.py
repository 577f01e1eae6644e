"""Makes mmengine's training checkpoints loadable with ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``. mmengine 0.10 pickles its ``MessageHub`` into every
checkpoint: ``HistoryBuffer`` objects (whose ``statistics_methods`` dict holds bound methods, pickled through the
``getattr`` builtin), numpy arrays and numpy scalars. Resuming then fails with ``Unsupported global:
mmengine.logging.history_buffer.HistoryBuffer``. Allow-listing would have to include ``getattr``, which turns the
restricted unpickler back into one that can run arbitrary code, and would then apply to every file a user hands in.

Instead, before a checkpoint is written, ``to_weights_only`` rewrites those objects into tensors and plain containers
with a marker key, and after loading ``from_weights_only`` rebuilds them. The files this code writes load under
``weights_only=True`` like any other; nothing is allow-listed.
"""
from collections import OrderedDict

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

HISTORY_BUFFER = "__mmengine_history_buffer__"
NUMPY_ARRAY = "__numpy_array__"
# Tensors (and their state_dict metadata) need no rewriting; walking them would only cost time.
UNTOUCHED_KEYS = ("state_dict", "optimizer")


def _numpy_to_safe(array):
    if array.dtype.kind in "biufc":
        return {NUMPY_ARRAY: torch.from_numpy(np.ascontiguousarray(array)), "dtype": array.dtype.str}
    return {NUMPY_ARRAY: array.tolist(), "dtype": array.dtype.str}


def _to_safe(obj):
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {HISTORY_BUFFER: True, "log": _numpy_to_safe(np.asarray(log)),
                "count": _numpy_to_safe(np.asarray(count)), "max_length": int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return _numpy_to_safe(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = ((k, _to_safe(v)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        return (list if isinstance(obj, list) else tuple)(_to_safe(v) for v in obj)
    return obj


def _from_safe(obj):
    if isinstance(obj, dict):
        if obj.get(HISTORY_BUFFER) is True:
            return HistoryBuffer(_from_safe(obj["log"]), _from_safe(obj["count"]), obj["max_length"])
        if NUMPY_ARRAY in obj:
            data = obj[NUMPY_ARRAY]
            array = data.numpy() if isinstance(data, torch.Tensor) else np.array(data)
            return array.astype(np.dtype(obj["dtype"]), copy=False)
        items = ((k, _from_safe(v)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        return (list if isinstance(obj, list) else tuple)(_from_safe(v) for v in obj)
    return obj


def to_weights_only(checkpoint):
    """Rewrites, in place, every part of an mmengine checkpoint dict except the model and optimizer states."""
    for key in list(checkpoint):
        if key not in UNTOUCHED_KEYS:
            checkpoint[key] = _to_safe(checkpoint[key])
    return checkpoint


def from_weights_only(checkpoint):
    """Inverse of ``to_weights_only`` (in place); a checkpoint without markers is returned unchanged."""
    for key in list(checkpoint):
        if key not in UNTOUCHED_KEYS:
            checkpoint[key] = _from_safe(checkpoint[key])
    return checkpoint
