"""Launcher detection and the OpenMPI -> torch.distributed environment translation."""
import os

import pytest

from mmdet3d.apis import distributed


@pytest.fixture
def clean_env(monkeypatch):
    # A private copy of the environment: what the translation writes must not leak into later tests (a stray RANK
    # would make the next tool run wait for a second process).
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "OMPI_"))})
    return monkeypatch


def test_detect_launcher():
    assert distributed.detect_launcher({}) == "none"
    assert distributed.detect_launcher({"RANK": "0", "WORLD_SIZE": "2"}) == "torchrun"
    assert distributed.detect_launcher({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}) == "mpi"


def test_torchpack_dist_run_environment(clean_env):
    # What `torchpack dist-run -np 2` gives rank 1: OpenMPI's variables and MASTER_HOST.
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "1")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    clean_env.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    clean_env.setenv("MASTER_HOST", "node7:41234")
    distributed._export_mpi_env()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] == [
        "1", "2", "1", "node7", "41234"]


def test_plain_mpirun_on_one_node_uses_localhost(clean_env):
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "0")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "4")
    clean_env.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4")
    distributed._export_mpi_env()
    assert os.environ["MASTER_ADDR"] == distributed.DEFAULT_MASTER_ADDR
    assert os.environ["MASTER_PORT"] == distributed.DEFAULT_MASTER_PORT and os.environ["LOCAL_RANK"] == "0"


def test_plain_mpirun_over_nodes_needs_a_master(clean_env):
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "0")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "16")
    clean_env.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "8")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed._export_mpi_env()


def test_bad_master_host_is_named(clean_env):
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "0")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    clean_env.setenv("MASTER_HOST", "node7")
    with pytest.raises(ValueError, match="MASTER_HOST"):
        distributed._export_mpi_env()


def test_single_process_needs_no_process_group(clean_env):
    assert distributed.init_distributed() == distributed.DistInfo()
    assert distributed.gather_to_rank0_in_order([1, 2, 3, 1], 3) == [1, 2, 3]
    assert distributed.broadcast_from_rank0({"a": 1}) == {"a": 1}
