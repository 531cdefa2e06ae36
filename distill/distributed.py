"""Past one device: Lightning's DDP, with every process running the whole command.

Lightning starts the other processes of a machine by running the same command again (its
subprocess launcher; torchrun and SLURM start them all themselves). Every process therefore goes
through the same steps in the same order, and distill lets only rank zero own the run folder:
it checks and locks it, writes the weights and the reports, and prints; the other ranks train
their share of each batch, then wait for rank zero's report and read it. The teacher-logits cache
is the exception: every process computes and writes its share of the epochs (`cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from distill.errors import DistillError

# torch is imported where it is needed: the command line reads the rank before anything else,
# and `distill --help` should not wait for torch.

STRATEGIES = ("auto", "ddp")
# Where a launcher says which process this is; absent, the process is the only one, or the first.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")
# What a launch on several machines sets: Lightning's own variables, torchrun's or SLURM's.
MULTI_NODE_VARIABLES = (("MASTER_ADDR", "NODE_RANK"), ("MASTER_ADDR", "RANK", "WORLD_SIZE"),
                        ("SLURM_NTASKS", "SLURM_PROCID"))


@dataclass(frozen=True)
class Parallel:
    """devices: processes on each machine (one a device); num_nodes: machines; strategy: how
    Lightning spreads the work ("auto": DDP when there is more than one process)."""

    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def trainer_args(self) -> dict:
        strategy = "ddp" if self.world_size > 1 and self.strategy == "auto" else self.strategy
        # Batches are sharded by distill's own sampler (`data.IndexBatches`), so that the
        # augmentation stays a function of (seed, epoch, index) whatever the process.
        return {"devices": self.devices, "num_nodes": self.num_nodes, "strategy": strategy,
                "use_distributed_sampler": False}


def check_parallel(parallel: Parallel, accelerator: str, batch_size: int) -> None:
    """One clear line for devices this machine lacks, an unknown strategy, several nodes without
    a multi-node launch, or a batch that does not split evenly."""
    import torch

    if parallel.strategy not in STRATEGIES:
        raise DistillError(f"Unknown strategy {parallel.strategy!r}: use {' or '.join(STRATEGIES)} "
                           "(DDP, one process a device).")
    cuda = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    available, kind = ((torch.cuda.device_count(), "CUDA devices") if cuda else
                       (1, "MPS device") if accelerator == "mps" else
                       (os.cpu_count() or 1, "CPU cores"))
    if parallel.devices > available:
        raise DistillError(f"--devices {parallel.devices}: this machine has {available} "
                           f"{kind}. Use at most {available}.")
    if parallel.num_nodes > 1 and not any(all(v in os.environ for v in needed)
                                          for needed in MULTI_NODE_VARIABLES):
        raise DistillError(f"--num-nodes {parallel.num_nodes} needs a multi-node launch: run the "
                           "command on every machine with MASTER_ADDR, MASTER_PORT and NODE_RANK "
                           "set, or under torchrun or srun (docs/multi-node.md).")
    if batch_size % parallel.world_size:
        raise DistillError(f"The batch size {batch_size} does not split evenly over "
                           f"{parallel.world_size} processes: give a multiple of "
                           f"{parallel.world_size} (--batch-size is the batch of all processes).")


def is_rank_zero() -> bool:
    """Whether this process owns the run folder: the first of all, or the only one."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def wait_for_rank_zero() -> None:
    """All processes meet here (after rank zero has written what the others read); alone, a
    process goes straight on."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
