"""The Triton deformable-attention kernels, run by Triton's interpreter on the CPU, against the brute force and the
PyTorch path (each check in a fresh process, see msda_triton_checks.py); and the dispatch that picks them."""
import os
import subprocess
import sys

import pytest
import torch

from mmdet3d.ops.common import FORCE_REFERENCE_ENV
from mmdet3d.ops.msda import msda

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = [["forward_matches_brute_force"], ["backward_matches_the_pytorch_path", "float64", "1e-10"],
          ["backward_matches_the_pytorch_path", "float32", "1e-5"], ["half_precision_is_computed_in_float32"]]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: "-".join(c))
def test_kernels_in_the_interpreter(check):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([HERE] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    run = subprocess.run([sys.executable, os.path.join(HERE, "msda_triton_checks.py"), *check], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{' '.join(check)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def test_dispatch_uses_triton_only_for_cuda_inputs(monkeypatch):
    monkeypatch.delenv(FORCE_REFERENCE_ENV, raising=False)
    cpu = torch.zeros(1)
    assert not msda.use_triton(cpu)
    fake_cuda = torch.empty(1, device="meta")
    monkeypatch.setattr(type(fake_cuda), "is_cuda", property(lambda t: t.device.type in ("cuda", "meta")))
    assert msda.use_triton(fake_cuda) == (msda._triton_kernel() is not None)
    assert not msda.use_triton(fake_cuda, cpu)
    assert not msda.use_triton(fake_cuda, torch.empty(2 ** 31, dtype=torch.int8, device="meta"))
    monkeypatch.setenv(FORCE_REFERENCE_ENV, "1")
    assert not msda.use_triton(fake_cuda)
