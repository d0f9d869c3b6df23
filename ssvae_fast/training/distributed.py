"""Multi-process training with torch.distributed (`torchrun --nproc_per_node=N -m ssvae_fast train ...`).

Every process draws the same global batch from the same generator and takes its slice of it (labelled
and unlabelled parts sliced separately, `torch.tensor_split`: sizes may differ by one). Each computes
the sum of its examples' losses divided by the global batch size, and the gradients are summed over
processes with one all_reduce: the result is the gradient of the global batch's mean loss, however
unequal the slices. Only rank 0 evaluates, logs and writes files. Backend gloo on the CPU, nccl on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from .batches import Batch
from .config import autocast


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: rank, world size and device (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: Batch) -> Batch:
        """This process's slice of the global batch (the whole batch when alone)."""
        if not self.active:
            return batch
        return Batch(*(None if t is None else torch.tensor_split(t, self.world_size)[self.rank] for t in batch))

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum each tensor over the processes, in place, with a single all_reduce."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values of each tensor on every process."""
        if self.active:
            for t in tensors:
                dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> Processes:
    """This process's place: alone, or (WORLD_SIZE > 1 in the environment, as torchrun sets it) one of a
    process group, initialized here unless it already is. On CUDA each process takes GPU LOCAL_RANK."""
    device = torch.device(device)
    world_size = world_size_from_env()
    if world_size <= 1:
        return Processes(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Processes(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def teardown() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gradients(model, batch: Batch, alpha: float, procs: Processes, kl_weight: float = 1.0,
              temperature: float = 1.0, autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Set every trainable parameter's .grad to the gradient of the global batch's mean loss (the KL terms
    weighted by kl_weight; the Gumbel-softmax estimator at `temperature` when the batch carries Gumbel
    noise; the forward pass under torch.autocast to `autocast_dtype` when given); return that loss (the
    same value on every process), detached, in float32."""
    model.zero_grad(set_to_none=False)
    part = procs.shard(batch)
    if part.size:
        relaxed = {} if part.gumbel is None else dict(estimator="gumbel", gumbel=part.gumbel, temperature=temperature)
        if part.c_l is not None:  # the classifier reads inputs of its own (shifted images)
            relaxed["classifier_inputs"] = (part.c_l, part.c_u)
        with autocast(autocast_dtype, part.x_l.device.type):
            loss = model.loss(part.x_l, part.y_l, part.x_u, alpha=alpha, eps_l=part.eps_l, eps_u=part.eps_u,
                              reduction="sum", kl_weight=kl_weight, **relaxed) / batch.size
        loss.backward()
        loss = loss.detach().float()
    else:  # a slice with no example: it adds nothing
        loss = batch.x_l.new_zeros(())
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if procs.active:
        loss = loss.reshape(1).clone()
        procs.sum_([p.grad for p in params] + [loss])
        loss = loss[0]
    return loss
