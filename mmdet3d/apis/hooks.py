"""Runner hooks: atomic checkpoints with ``latest.pth``, weights-only-loadable checkpoints, progress bars and
per-evaluation metrics files."""
import json
import math
import os
import sys

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from tqdm import tqdm

from mmdet3d.registry import HOOKS
from mmdet3d.utils.checkpoint import ATOMIC_BACKEND, LATEST, atomic_write_bytes, link_latest
from mmdet3d.utils.checkpoint_compat import to_weights_only


def plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (``epoch_N.pth``, ``interval``, ``max_keep_ckpts``) writing every file atomically
    and pointing ``latest.pth`` at the newest complete checkpoint. A kill at any moment leaves ``latest.pth`` whole:
    it is replaced by a rename only after the new checkpoint is on disk, and, being a hard link, it survives the
    removal of old ``epoch_N.pth`` files."""

    def __init__(self, *args, backend_args=None, **kwargs):
        super().__init__(*args, backend_args=backend_args or {"backend": ATOMIC_BACKEND}, **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        super()._save_checkpoint_with_step(runner, step, meta)
        if is_main_process():
            link_latest(self.last_ckpt, os.path.join(self.out_dir, LATEST))


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Rewrites mmengine's message hub (``HistoryBuffer``, numpy values) in each checkpoint into tensors and plain
    containers, so that resuming works under ``torch.load(weights_only=True)`` (see
    ``mmdet3d.utils.checkpoint_compat``; ``read_checkpoint`` restores them)."""

    priority = "LOWEST"  # after any hook that adds to the checkpoint

    def before_save_checkpoint(self, runner, checkpoint):
        to_weights_only(checkpoint)


def _jsonable(value):
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def write_metrics_json(metrics, path):
    atomic_write_bytes((json.dumps(_jsonable(metrics), indent=2) + "\n").encode(), path)


HEADLINE_METRICS = ("mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE")


def metrics_line(metrics):
    """The headline metrics in one line (``mAP 0.123  NDS 0.234 ...``; every metric for other evaluators)."""
    short = {k.split("/")[-1]: v for k, v in metrics.items()}
    names = [n for n in HEADLINE_METRICS if n in short] or list(short)
    return "  ".join(f"{n} {short[n]:.4f}" if isinstance(short[n], float) else f"{n} {short[n]}" for n in names)


@HOOKS.register_module()
class MetricsDumpHook(Hook):
    """Writes each evaluation's metrics to ``<run dir>/metrics_epoch_<N>.json`` and prints their headline in one
    line (rank 0)."""

    priority = "LOW"

    def after_val_epoch(self, runner, metrics=None):
        if metrics and is_main_process():
            path = os.path.join(runner.work_dir, f"metrics_epoch_{runner.epoch}.json")
            write_metrics_json(metrics, path)
            print(f"epoch {runner.epoch} val: {metrics_line(metrics)}  ({path})", flush=True)


@HOOKS.register_module()
class RunSummaryHook(Hook):
    """Prints what the run is, in seven lines, before its first iteration (rank 0); the whole environment, config
    and hook list go to the run's text log only."""

    priority = "VERY_HIGH"

    def __init__(self, start=None):
        self.start = start

    def before_train(self, runner):
        if not is_main_process():
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        loader = runner.train_dataloader
        cfg = runner.cfg
        optimizer = (cfg.get("optimizer") or {})
        schedule = (cfg.get("lr_config") or {}).get("policy", "constant")
        val_size = len(runner.val_loop.dataloader.dataset) if getattr(runner, "_val_loop", None) else None
        device = next(model.parameters()).device
        sensors = getattr(model, "sensors", None)
        lines = [
            f"config    {cfg.filename}",
            f"run dir   {runner.work_dir} (text log {os.path.join(runner.log_dir, runner.timestamp + '.log')})",
            f"model     {type(model).__name__}" + (f" [{', '.join(sensors)}]" if sensors else "")
            + f", {params / 1e6:.2f} M parameters ({trainable / 1e6:.2f} M trained)",
            f"data      train {len(loader.dataset)} samples, {len(loader)} iterations/epoch of batch "
            f"{loader.batch_size}" + (f"; val {val_size} samples" if val_size is not None else "; no validation"),
            f"schedule  {plural(runner.max_epochs, 'epoch')} from epoch {runner.epoch}, "
            f"{optimizer.get('type', '?')} lr {optimizer.get('lr', '?')}, {schedule}",
            f"device    {device.type}, world size {runner.world_size}, {torch.get_num_threads()} CPU threads",
            f"start     {self.start or 'from scratch'}"
            + (f" at epoch {runner.epoch}, iteration {runner.iter}" if runner.iter else ""),
        ]
        print("\n".join(lines), flush=True)


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """tqdm bars on rank 0 for each training epoch (with loss and lr), validation and test pass."""

    priority = "LOW"

    def __init__(self, mininterval=0.5):
        self.mininterval = mininterval
        self._bar = None
        self._lr = None

    def _open(self, runner, total, desc):
        self._close()
        if runner.rank == 0:
            self._bar = tqdm(total=total, desc=desc, mininterval=self.mininterval, dynamic_ncols=True,
                             file=sys.stderr)

    def _advance(self, **postfix):
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_train_epoch(self, runner):
        self._open(runner, len(runner.train_dataloader), f"train {runner.epoch + 1}/{runner.max_epochs}")

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        # The lr used by this iteration (schedulers step after it).
        self._lr = runner.optim_wrapper.get_lr()["lr"][0] if self._bar is not None else None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        postfix = {}
        if self._bar is not None:
            if outputs and "loss" in outputs:
                postfix["loss"] = f"{float(torch.as_tensor(outputs['loss']).detach()):.4g}"
            postfix["lr"] = f"{self._lr:.3g}"
        self._advance(**postfix)

    def after_train_epoch(self, runner):
        self._close()

    def before_val_epoch(self, runner):
        self._open(runner, len(runner.val_dataloader), "val")

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._advance()

    def after_val_epoch(self, runner, metrics=None):
        self._close()

    def before_test_epoch(self, runner):
        self._open(runner, len(runner.test_dataloader), "test")

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._advance()

    def after_test_epoch(self, runner, metrics=None):
        self._close()
