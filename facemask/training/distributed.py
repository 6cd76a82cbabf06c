"""Several processes, one model: the process group that torchrun's environment describes, and
the few collectives the training loops need. With no process group every helper here is the
one-process identity, so the loops run unchanged under plain `python`."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# What torchrun (torch.distributed.run) sets in every process it starts.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Context:
    """This process's place in the job and the device it trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Was this process started by torchrun (or anything that sets the same variables)?"""
    return all(v in os.environ for v in TORCHRUN_VARS)


def torchrun_command(
    processes: int, nodes: int, rendezvous: str, module: str, argv: list[str], node_rank: int = 0
) -> list[str] | None:
    """The torchrun command that starts `module argv` as `processes` x `nodes` processes
    (params `launch`), or None for one process or when torchrun already started this one.
    The stage runs it in place of itself, so `dvc repro` and `dvc exp run` need no wrapper.

    Several machines meet by static rendezvous at `rendezvous` (the first machine's
    host:port) with each machine's `node_rank` given, so global rank 0, the process that
    writes the outputs, is always on machine 0: the one that runs DVC."""
    if processes * nodes == 1 or launched_by_torchrun():
        return None
    if not 0 <= node_rank < nodes:
        raise ValueError(
            f"node rank {node_rank} is not one of the {nodes} machines (0..{nodes - 1})"
        )
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes == 1 and not rendezvous:
        cmd.append("--standalone")  # a local rendezvous on a free port
    else:
        host, _, port = rendezvous.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"launch.rendezvous must be host:port, not {rendezvous!r}")
        cmd += [f"--nnodes={nodes}", f"--node-rank={node_rank}", "--rdzv-backend=static"]
        cmd += [f"--master-addr={host}", f"--master-port={port}"]
    return [*cmd, "-m", module, *argv]


def init_distributed(mode: str = "auto") -> Context:
    """Join the process group torchrun describes; params.yaml `train.distributed`.

    'auto': DistributedDataParallel when launched by torchrun (nccl on GPUs, one per local
    rank; gloo on CPU), one process on the CPU otherwise. 'off': always one process.
    Calling it again returns the group already joined.
    """
    if mode not in ("auto", "off"):
        raise ValueError(f"train.distributed must be 'auto' or 'off', not {mode!r}")
    if dist.is_initialized():
        return current_context()
    if not launched_by_torchrun():
        return Context()
    world = int(os.environ["WORLD_SIZE"])
    if mode == "off":
        if world > 1:
            # Every process would train the same model and race to write the same files.
            raise RuntimeError(
                f"train.distributed is 'off' but torchrun started {world} processes: "
                "run the stage with plain python, or set train.distributed: auto"
            )
        return Context()
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = CPU
        dist.init_process_group("gloo")
    return current_context(device)


def current_context(device: torch.device | None = None) -> Context:
    """The running process group as a Context (one process on the CPU when there is none)."""
    if not dist.is_initialized():
        return Context()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Context(dist.get_rank(), local, dist.get_world_size(), device or _collective_device())


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return rank() == 0


def is_local_main() -> bool:
    """The first process on this machine: the one that fills the machine's own caches."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 if dist.is_initialized() else True


def _collective_device() -> torch.device:
    # nccl moves only GPU tensors; gloo only CPU ones.
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return CPU


def shard_range(total: int) -> range:
    """This rank's contiguous share of `total` rows (rank order; the last shares may be short)."""
    chunk = math.ceil(total / world_size()) if total else 0
    start = min(rank() * chunk, total)
    return range(start, min(start + chunk, total))


def gather_rows(rows: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's `shard_range(total)` rows, concatenated in rank order, on every rank."""
    world = world_size()
    if world == 1:
        return rows
    chunk = math.ceil(total / world) if total else 0
    # all_gather needs equal shapes: pad each share to `chunk` rows, then trim.
    padded = rows.new_zeros((chunk, *rows.shape[1:]), device=_collective_device())
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total].to(rows.device)


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over all ranks (float64, so counts stay exact)."""
    if world_size() == 1:
        return values.double()
    out = values.to(_collective_device(), torch.float64)
    dist.all_reduce(out)
    return out.cpu()


def any_across(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of boolean `flags` over all ranks."""
    return sum_across(flags.long()) > 0


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (any picklable value), on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]
