"""Multi-process training: two gloo processes give the gradient of one process on the same global
batch, and a short torchrun run on digits learns."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssvae_fast import M2
from ssvae_fast.training import distributed
from ssvae_fast.training.batches import Batch

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

N_L, N_U, ALPHA = 7, 13, 3.0  # odd sizes: the two processes get unequal slices


def _model() -> M2:
    torch.manual_seed(0)
    return M2(x_dim=20, n_classes=4, z_dim=3, hidden=(16,), backend="torch")


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(N_L, 20, generator=g), torch.randint(0, 4, (N_L,), generator=g),
                 torch.rand(N_U, 20, generator=g), torch.randn(N_L, 3, generator=g), torch.randn(N_U, 4, 3, generator=g))


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    procs = distributed.setup("cpu")
    try:
        model = _model()
        loss = distributed.gradients(model, _batch(), ALPHA, procs)
        torch.save({"loss": loss, "grads": {n: p.grad for n, p in model.named_parameters()}},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_gradient_of_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model = _model()
    batch = _batch()
    loss = model.loss(*batch[:3], alpha=ALPHA, eps_l=batch.eps_l, eps_u=batch.eps_u)  # one process, mean
    loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
    alone = _model()  # the same function with one process is the plain mean-loss gradient
    distributed.gradients(alone, batch, ALPHA, distributed.Processes())
    for (name, p), q in zip(model.named_parameters(), alone.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_the_slices_cover_the_global_batch_once():
    batch = _batch()
    parts = [distributed.Processes(rank=r, world_size=3).shard(batch) for r in range(3)]
    for i, whole in enumerate(batch):
        if whole is None:  # no Gumbel noise in an enumerating batch
            assert all(part[i] is None for part in parts)
            continue
        assert torch.equal(torch.cat([part[i] for part in parts]), whole)
    assert [part.size for part in parts] == [3 + 5, 2 + 4, 2 + 4]


def test_torchrun_two_processes_train_digits(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "ssvae_fast", "train", "--steps", "300", "--eval-every", "100", "--no-progress", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("test accuracy")]
    assert len(lines) == 1, result.stdout  # rank 0 alone reports
    assert float(re.search(r"test accuracy ([\d.]+)%", lines[0]).group(1)) > 80
    assert "model selection used 200 validation labels" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pt", ".jsonl")) == [
        "best.pt", "last.pt", "metrics.jsonl"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
