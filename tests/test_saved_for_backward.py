"""What a training step keeps between its forward and its backward (docs/design.md section 2, item 3).

Every tensor that autograd saves during `M2.loss` is seen through `torch.autograd.graph.saved_tensors_hooks`.
The reference keeps the (n_u C, D) repeated inputs and logits; a fused backend keeps no logits: the
`cpu`, `triton` and `cuda` backends keep one (rows, D) tensor, s = x - sigmoid(l), that their backward
reads (and the recompute settings of the cpu and triton backends keep none). These are the memory claims of the design, checked
on every backend this machine runs (Triton under the interpreter on a CPU).
"""

from __future__ import annotations

import pytest
import torch

from tests.factories import make_batch, make_model
from tests.op_checks import COMPILED, RECOMPUTE_BACKENDS, backend_param, recompute_logits

C, D, H, Z = 10, 97, 23, 5  # D stands apart from every other size
N_L, N_U = 6, 6
ROWS = N_L + N_U * C  # rows through the decoder, labelled first
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def saved_storages(backend: str) -> dict:
    """{storage address: (shape, storage bytes)} of every tensor saved for backward by one loss."""
    model = make_model(D, C, Z, H, device=DEVICE)
    batch = make_batch(model, N_L, N_U, device=DEVICE)
    model.backend = backend
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = (tuple(t.shape), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(batch.x_l, batch.y_l, batch.x_u, alpha=1.0, eps_l=batch.eps_l, eps_u=batch.eps_u)
    loss.backward()  # what was saved is usable
    return saved


def pixel_tensors(saved: dict) -> list:
    """The saved tensors with a row per enumerated (example, class) pair and D columns."""
    return sorted(shape for shape, nbytes in saved.values()
                  if shape and shape[-1] == D and nbytes >= N_U * C * D * 4)


def _params(names):
    """The backends, skipped where they cannot run, and `cpu` where the tests run on CUDA."""
    return [pytest.param(b, marks=pytest.mark.skip(reason="the cpu backend runs CPU tensors; this machine's "
                                                          "tests run on CUDA"))
            if b == "cpu" and DEVICE == "cuda" else backend_param(b) for b in names]


def test_the_reference_keeps_repeated_inputs_and_logits():
    assert pixel_tensors(saved_storages("reference")) == [(N_U * C, D), (N_U * C, D)]


@pytest.mark.parametrize("backend", _params(COMPILED))
def test_fused_backends_keep_one_rows_by_pixels_tensor_and_no_logits(backend):
    saved = saved_storages(backend)
    assert pixel_tensors(saved) == [(ROWS, D)]  # s = x - sigmoid(l), read by the backward's GEMMs
    reference = saved_storages("reference")
    assert sum(b for _, b in saved.values()) < 0.6 * sum(b for _, b in reference.values())  # 0.50 (cpu), 0.55 (triton) here


@pytest.mark.parametrize("backend", _params(RECOMPUTE_BACKENDS))
def test_recompute_keeps_nothing_of_rows_by_pixels(backend):
    with recompute_logits(backend):
        assert pixel_tensors(saved_storages(backend)) == []
