"""Process-group setup for the three ways the tools are launched.

- plain ``python``: one process, no process group;
- ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` are set;
- ``torchpack dist-run`` / ``mpirun`` (OpenMPI): ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}`` are set, and torchpack adds
  ``MASTER_HOST=addr:port``. We read those variables instead of calling ``torchpack.distributed.init`` (it needs
  mpi4py, and its collective helpers call ``.cuda()``).

NCCL on GPU, gloo on CPU.
"""
import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = "29500"


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "none", "torchrun" or "mpi"
    backend: str | None = None


def _int_env(name):
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from e


def detect_launcher(environ=None):
    """``"torchrun"``, ``"mpi"`` or ``"none"`` from the environment variables the launchers set."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return "torchrun"
    if "OMPI_COMM_WORLD_RANK" in environ and "OMPI_COMM_WORLD_SIZE" in environ:
        return "mpi"
    return "none"


def _export_mpi_env():
    """Translates OpenMPI's variables into the ``env://`` ones torch reads."""
    os.environ["RANK"] = os.environ["OMPI_COMM_WORLD_RANK"]
    os.environ["WORLD_SIZE"] = os.environ["OMPI_COMM_WORLD_SIZE"]
    os.environ["LOCAL_RANK"] = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    if "MASTER_HOST" in os.environ and "MASTER_ADDR" not in os.environ:
        addr, _, port = os.environ["MASTER_HOST"].rpartition(":")
        if not addr or not port.isdigit():
            raise ValueError(f"MASTER_HOST={os.environ['MASTER_HOST']!r} must look like host:port")
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, port
    if "MASTER_ADDR" not in os.environ:
        local_size = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", os.environ["WORLD_SIZE"])
        if local_size != os.environ["WORLD_SIZE"]:
            raise ValueError("mpirun over several nodes: set MASTER_ADDR (and MASTER_PORT) to rank 0's host, "
                             "or launch with `torchpack dist-run`")
        os.environ["MASTER_ADDR"] = DEFAULT_MASTER_ADDR
    os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)


def init_distributed(backend=None, timeout_s=1800):
    """Joins the process group the launcher describes (no-op for a single plain process).

    Returns a ``DistInfo``; sets the CUDA device to the local rank when NCCL is used.
    """
    launcher = detect_launcher()
    if launcher == "none":
        return DistInfo()
    if launcher == "mpi":
        _export_mpi_env()
    rank, world_size, local_rank = _int_env("RANK"), _int_env("WORLD_SIZE"), int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} but only {torch.cuda.device_count()} visible GPUs")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, launcher=launcher, backend=backend)


def shutdown_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_to_rank0_in_order(part, size):
    """Gathers per-rank result lists to rank 0 in dataset order; ``None`` on the other ranks.

    Assumes the sharding of an unshuffled ``DistributedSampler``/mmengine ``DefaultSampler``: rank ``r`` holds
    samples ``r, r + W, r + 2W, ...`` of the index list padded to a multiple of ``W``; the padding is cut at ``size``.
    """
    world_size = get_world_size()
    if world_size == 1:
        return list(part)[:size]
    rank = get_rank()
    parts = [None] * world_size if rank == 0 else None
    dist.gather_object(list(part), parts, dst=0)
    if rank != 0:
        return None
    ordered = []
    for i in range(max(len(p) for p in parts)):
        ordered.extend(p[i] for p in parts if i < len(p))
    return ordered[:size]


def broadcast_from_rank0(obj):
    """``obj`` of rank 0 on every rank."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
