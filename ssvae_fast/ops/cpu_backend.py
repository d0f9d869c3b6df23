"""The `cpu` backend's four ops: C++/OpenMP kernels of ssvae_fast._C for the elementwise and reduction
work, torch (MKL) for every GEMM. `cpu_ops()` is the factory `ssvae_fast.backends` calls.

Each op has the signature and semantics of its plain-torch face in this package
(`class_conditional_activation_torch`, `gaussian_reparam_kl_torch`, `bernoulli_loglik_linear_torch`,
`elbo_reduction_torch`), empty inputs included. Each is a `torch.library.custom_op`
`ssvae_fast::<op>_cpu` with a fake (meta) implementation and an autograd formula that calls a second
custom op `ssvae_fast::<op>_cpu_backward`, so `torch.compile` traces through forward and backward without
graph breaks; `ops.glue.FusedOp` registers the pair and gives eager calls a direct path to the same two
implementations (no dispatcher round trip: ~0.1 ms per call after a large GEMM here). The launchers
check shapes, dtypes and devices, make inputs contiguous at the boundary, allocate the outputs and pass
raw pointers and sizes to the kernels (csrc/cpu/<op>.cpp, formulas and VJPs in the headers).

    class_conditional_activation   act(a + W_y[:, c]), labelled rows one class each, the others every
                                   class, in one pass; backward grad_a and grad_W_y in one pass, act'
                                   recomputed from the output (the next layer's saved input anyway), or
                                   from a for the (N, C, H) form
    gaussian_reparam_kl            z and KL in one pass; backward to head and eps in one pass
    bernoulli_loglik_linear        logits GEMM by torch (no bias), written straight into the (M, D)
                                   buffer s that the kernel turns in place into s = x - sigmoid(l) while
                                   it reduces each row to ll (M,), the bias added on the fly; s is all
                                   the backward needs. Without autograd: chunks through one reused
                                   buffer, so only a chunk of logits ever exists. Backward: dl = g s
                                   and db = s^T g in one kernel pass (eager autograd: in place over s,
                                   which it uses once), then dW = dl^T h and dh = dl W (GEMMs);
                                   dx = (sum_rows g h) W^T + b sum_rows g only when x needs it.
                                   Rows: (N, C, H), or labelled rows then C per unlabelled example (M, H)
    elbo_reduction                 per-example losses and their backward, one pass each, in double

Numerics: float32 and float64 (one dtype for all float inputs of an op; int64 class indices); float32
elementwise functions are vectorized polynomials exact to <= 2 ulp (csrc/cpu/vec_math.h), float64 uses
libm; every reduction accumulates in double; exact softplus (no threshold) for every finite input.
Deterministic: no atomics; reductions over rows use a fixed partition into blocks that depends only on
the sizes, then sum the blocks in order, so results are bitwise reproducible run to run (and across
thread counts for the kernels; MKL's GEMMs are reproducible run to run at a fixed thread count).
Gradients flow to every float input, computed only where needed; second derivatives are not implemented.

Threads: the kernels use OpenMP and the GEMMs MKL; both run on torch's OpenMP runtime (the extension
resolves libgomp.so.1 to the copy torch already loaded), so `torch.set_num_threads` sets both and the two
never oversubscribe the cores.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from real
# annotations.
import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from .bernoulli_loglik_linear import bernoulli_linear_dx, check_bernoulli_linear_inputs
from .class_conditional import check_class_conditional_inputs, class_conditional_output_shape
from .elbo import check_elbo_inputs
from .gaussian import check_gaussian_inputs
from .glue import FusedOp, elbo_fused_op

__all__ = [
    "cpu_ops",
    "class_conditional_activation_cpu",
    "gaussian_reparam_kl_cpu",
    "bernoulli_loglik_linear_cpu",
    "elbo_reduction_cpu",
]

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}
_ACTIVATIONS = ("softplus", "relu")

# Rows of logits per GEMM + epilogue chunk of bernoulli_loglik_linear when no gradient is needed (with
# autograd the logits are written into s, all rows at once; see _bernoulli_forward): 512 rows x 784 floats
# = 1.6 MB, in L2 between the GEMM and the kernel.
BERNOULLI_CHUNK_ROWS = 512
# Rows per GEMM + epilogue chunk when s is kept for the backward; None: all rows in one GEMM (fastest
# measured, see _bernoulli_forward; a knob for benchmarks/profile_cpu_step.py --ops).
BERNOULLI_STORE_CHUNK_ROWS: Optional[int] = None


# ------------------------------------------------------------------------------------------------------
# Checks shared by the launchers.
# ------------------------------------------------------------------------------------------------------
def _check_tensors(op: str, floats: dict, ints: Optional[dict] = None) -> None:
    """CPU tensors, one float dtype (float32 or float64) for `floats`, int64 for `ints`; ValueError or
    TypeError naming the offending tensors otherwise. None entries are skipped."""
    floats = {k: v for k, v in floats.items() if v is not None}
    ints = {k: v for k, v in (ints or {}).items() if v is not None}
    for name, t in {**floats, **ints}.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(
                f"{op}: the cpu backend runs on CPU tensors, got {name} on {t.device} "
                "(use backend 'cuda' or 'triton' for CUDA tensors)"
            )
    dtypes = {t.dtype for t in floats.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPE_NAMES:
        listed = ", ".join(f"{k} {t.dtype}" for k, t in floats.items())
        raise TypeError(f"{op}: float inputs must share one dtype, float32 or float64; got {listed}")
    for name, t in ints.items():
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64 class indices, got {t.dtype}")


def _ptr(t: Optional[Tensor]) -> int:
    """Data pointer for the kernels; 0 for None or an empty tensor (the kernels then skip it)."""
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _dtype(t: Tensor) -> str:
    return _DTYPE_NAMES[t.dtype]


# ======================================================================================================
# 1. Class-conditional first layer: act(a + W_y[:, c]).
# ======================================================================================================
def _class_conditional_forward(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    ext = _ext.require_ext()
    a = a.contiguous()
    wy_t = w_y.t().contiguous()  # (C, H): a class column is a contiguous row
    N, H = a.shape
    C = w_y.shape[1]
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    n_l = 0 if classes is None else classes.shape[0]
    if classes is not None:
        classes = classes.contiguous()
    ext.class_conditional_forward(
        _ptr(a), _ptr(wy_t), _ptr(classes), _ptr(out), N, n_l, H, C, activation, _dtype(a)
    )
    return out


def _class_conditional_fake(a, w_y, classes, activation):
    return a.new_empty(class_conditional_output_shape(a, w_y, classes))


def _class_conditional_backward(
    grad_out: Tensor,
    a: Optional[Tensor],
    w_y: Tensor,
    out: Optional[Tensor],
    classes: Optional[Tensor],
    activation: str,
    N: int,
    need_a: bool,
    need_w_y: bool,
) -> Tuple[Tensor, Tensor]:
    """(grad_a (N, H) or empty, grad_w_y (H, C) or empty). act' from `out` when given, else from a + w_y."""
    ext = _ext.require_ext()
    grad_out = grad_out.contiguous()
    H, C = w_y.shape
    n_l = 0 if classes is None else classes.shape[0]
    dtype = grad_out.dtype
    grad_a = grad_out.new_empty((N, H)) if need_a else grad_out.new_empty((0,))
    grad_w_y = grad_out.new_empty((H, C)) if need_w_y else grad_out.new_empty((0,))
    if not (need_a or need_w_y):
        return grad_a, grad_w_y
    if N == 0 or H == 0:
        return grad_a, grad_w_y.zero_()
    wy_t = w_y.t().contiguous() if out is None else None
    a = a.contiguous() if out is None else None
    out = out.contiguous() if out is not None else None
    if classes is not None:
        classes = classes.contiguous()
    ext.class_conditional_backward(
        _ptr(grad_out), _ptr(a), _ptr(wy_t), _ptr(out), _ptr(classes), _ptr(grad_a),
        grad_w_y.data_ptr() if need_w_y else 0,  # H * C may be 0 with N > 0: the kernel writes nothing
        N, n_l, H, C, activation, _DTYPE_NAMES[dtype],
    )
    return grad_a, grad_w_y


def _class_conditional_backward_fake(grad_out, a, w_y, out, classes, activation, N, need_a, need_w_y):
    H, C = w_y.shape
    return (
        grad_out.new_empty((N, H) if need_a else (0,)),
        grad_out.new_empty((H, C) if need_w_y else (0,)),
    )


def _class_conditional_setup_context(ctx, inputs, output) -> None:
    a, w_y, classes, activation = inputs
    ctx.activation = activation
    ctx.n_rows = a.shape[0]
    ctx.from_output = classes is not None
    # Rows (classes given): the output is the next layer's saved input, alive anyway; a would be extra
    # memory. The (N, C, H) form (classes None) may be reshaped or copied by the caller, so act' is
    # recomputed from a (N, H) rather than keeping that output alive.
    ctx.save_for_backward(None if ctx.from_output else a, w_y, output if ctx.from_output else None, classes)


def _class_conditional_vjp(ctx, backward, grad_out):
    a, w_y, out, classes = ctx.saved_tensors
    need_a, need_w_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_out is None or not (need_a or need_w_y):
        return None, None, None, None
    grad_a, grad_w_y = backward(grad_out, a, w_y, out, classes, ctx.activation, ctx.n_rows, need_a, need_w_y)
    return (grad_a if need_a else None, grad_w_y if need_w_y else None, None, None)


_class_conditional_op = FusedOp(
    "class_conditional_activation_cpu", _class_conditional_forward, _class_conditional_fake,
    _class_conditional_backward, _class_conditional_backward_fake, _class_conditional_setup_context,
    _class_conditional_vjp, device_types="cpu",
)


def class_conditional_activation_cpu(
    a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str
) -> Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)], by one C++ kernel.

    a: (N, H) = W_v v + b; w_y: (H, C) class columns of the layer's weight (any strides);
    classes None: every class for every row -> (N, C, H), out[n, c] = act(a[n] + w_y[:, c]);
    classes (n_l,) int64 in [0, C) (checked), n_l <= N: the first n_l rows take one class each, the other
    rows every class -> (n_l + (N - n_l) * C, H), labelled rows first (the layout of
    `class_conditional_activation_torch`; n_l = N: one class per row, (N, H)).
    activation: "softplus" (exact, max(v, 0) + log1p(exp(-|v|))) or "relu". Differentiable in a and w_y
    (grad_w_y reduced over rows in double, deterministic).
    """
    check_class_conditional_inputs(a, w_y, classes)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
    _check_tensors("class_conditional_activation_cpu", {"a": a, "w_y": w_y}, {"classes": classes})
    _ext.require_ext()
    return _class_conditional_op(a, w_y, classes, activation)


# ======================================================================================================
# 2. Gaussian head epilogue: [mu, logvar], eps -> z, kl.
# ======================================================================================================
def _gaussian_forward(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    ext = _ext.require_ext()
    head, eps = head.contiguous(), eps.contiguous()
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,))
    ext.gaussian_reparam_kl_forward(_ptr(head), _ptr(eps), _ptr(z), _ptr(kl), R, Z, _dtype(head))
    return z, kl


def _gaussian_fake(head, eps):
    return head.new_empty(eps.shape), head.new_empty((eps.shape[0],))


def _gaussian_backward(
    head: Tensor,
    eps: Tensor,
    grad_z: Optional[Tensor],
    grad_kl: Optional[Tensor],
    need_head: bool,
    need_eps: bool,
) -> Tuple[Tensor, Tensor]:
    """(d head (R, 2Z) or empty, d eps (R, Z) or empty); a None grad_* counts as zero."""
    ext = _ext.require_ext()
    head, eps = head.contiguous(), eps.contiguous()
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z) if need_head else (0,))
    deps = head.new_empty((R, Z) if need_eps else (0,))
    grad_z = grad_z.contiguous() if grad_z is not None else None
    grad_kl = grad_kl.contiguous() if grad_kl is not None else None
    ext.gaussian_reparam_kl_backward(
        _ptr(head), _ptr(eps), _ptr(grad_z), _ptr(grad_kl), _ptr(dhead), _ptr(deps), R, Z, _dtype(head)
    )
    return dhead, deps


def _gaussian_backward_fake(head, eps, grad_z, grad_kl, need_head, need_eps):
    R, Z = eps.shape
    return head.new_empty((R, 2 * Z) if need_head else (0,)), head.new_empty((R, Z) if need_eps else (0,))


def _gaussian_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)
    ctx.set_materialize_grads(False)


def _gaussian_vjp(ctx, backward, grad_z, grad_kl):
    head, eps = ctx.saved_tensors
    need_head, need_eps = ctx.needs_input_grad
    if (grad_z is None and grad_kl is None) or not (need_head or need_eps):
        return None, None
    dhead, deps = backward(head, eps, grad_z, grad_kl, need_head, need_eps)
    return (dhead if need_head else None, deps if need_eps else None)


_gaussian_op = FusedOp(
    "gaussian_reparam_kl_cpu", _gaussian_forward, _gaussian_fake, _gaussian_backward, _gaussian_backward_fake,
    _gaussian_setup_context, _gaussian_vjp, device_types="cpu",
)


def gaussian_reparam_kl_cpu(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z = mu + exp(logvar / 2) * eps (R, Z) and
    kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,), by one C++ kernel (and one for the backward,
    to head and eps). KL accumulates in double. Any strides (copied to contiguous)."""
    check_gaussian_inputs(head, eps)
    _check_tensors("gaussian_reparam_kl_cpu", {"head": head, "eps": eps})
    _ext.require_ext()
    return _gaussian_op(head, eps)


# ======================================================================================================
# 3. Decoder output layer + Bernoulli log-likelihood.
# ======================================================================================================
def _bernoulli_forward(
    h_rows: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_l: int, C: int, store_s: bool
) -> Tuple[Tensor, Tensor]:
    """(ll (M,), s (M, D) or empty): the logits GEMM (torch, without the bias) and the epilogue kernel,
    which adds the bias and reduces each row while producing s = x - sigmoid(l) in place.

    store_s: one GEMM over all M rows writes h W^T straight into s, which the kernel overwrites with
    x - sigmoid(l): no buffer besides s, which the backward needs anyway. Otherwise (no autograd) chunks of
    BERNOULLI_CHUNK_ROWS rows through one reused buffer, so only a chunk of logits ever exists.
    Measured at MNIST sizes (M = 2300, D = 784, H = 500, float32; `benchmarks/profile_cpu_step.py --ops`,
    2 threads, medians): GEMM alone 5.9 ms; GEMM + epilogue over all rows at once 6.8 ms, in chunks of
    512 / 256 / 128 / 64 rows 7.2 / 7.3 / 7.6 / 8.4 ms (each chunk's GEMM repacks W, and on a loaded
    machine each chunk adds two OpenMP barriers, each of which can cost a 4 ms scheduler tick). The L3
    cache (260 MB here) holds the 7.3 MB of logits between the GEMM and the kernel anyway. Folding the
    bias into the kernel saves addmm's copy of the broadcast bias into its output (~1.4 ms, one thread).
    """
    ext = _ext.require_ext()
    M, H = h_rows.shape
    D = weight.shape[0]
    N = x.shape[0]
    ll = h_rows.new_empty((M,))
    s = h_rows.new_empty((M, D) if store_s else (0,))
    if M == 0:
        return ll, s
    if D == 0:
        return ll.zero_(), s
    weight_t = weight.t()
    if store_s:
        chunk = M if BERNOULLI_STORE_CHUNK_ROWS is None else min(M, BERNOULLI_STORE_CHUNK_ROWS)
    else:
        chunk = min(M, BERNOULLI_CHUNK_ROWS)
    buf = s if store_s else h_rows.new_empty((chunk, D))
    dtype = _dtype(h_rows)
    item = h_rows.element_size()
    for r0 in range(0, M, chunk):
        r1 = min(M, r0 + chunk)
        logits = buf[r0:r1] if store_s else buf[: r1 - r0]
        torch.mm(h_rows[r0:r1], weight_t, out=logits)  # the kernel adds the bias
        ext.bernoulli_linear_epilogue(
            logits.data_ptr(), _ptr(bias), x.data_ptr(), ll.data_ptr() + r0 * item,
            logits.data_ptr() if store_s else 0, r0, r1 - r0, N, n_l, C, D, dtype,
        )
    return ll, s


def _bernoulli_op_forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_l: int, C: int, store_s: bool
) -> Tuple[Tensor, Tensor]:
    """(ll (M,), s = x - sigmoid(l) (M, D) when store_s, else an empty tensor); h (M, H) rows."""
    bias = bias.contiguous() if bias is not None else None
    return _bernoulli_forward(h.contiguous(), weight.contiguous(), bias, x.contiguous(), n_l, C, store_s)


def _bernoulli_fake(h, weight, bias, x, n_l, C, store_s):
    M = h.shape[0]
    return h.new_empty((M,)), h.new_empty((M, weight.shape[0]) if store_s else (0,))


def _bernoulli_backward(
    grad_ll: Tensor,
    h: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    x: Tensor,
    s: Tensor,
    n_l: int,
    C: int,
    need_h: bool,
    need_weight: bool,
    need_bias: bool,
    need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dx (N, D)), each an empty tensor when not needed.

    s: x - sigmoid(l) (M, D) from the forward (read, never written), or empty: then recomputed here
    (chunked GEMM + epilogue). The backward custom op; eager autograd uses s up instead
    (`_bernoulli_backward_consuming_s`) with the same arithmetic, so the two give the same bits.
    """
    return _bernoulli_backward_rows(
        grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x, s_is_spare=False
    )


def _bernoulli_backward_consuming_s(grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x):
    """`_bernoulli_backward` that may overwrite s (eager autograd's single use of it; see _bernoulli_vjp)."""
    return _bernoulli_backward_rows(
        grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x, s_is_spare=True
    )


def _bernoulli_backward_rows(
    grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x, s_is_spare: bool
):
    """dl = g * s (M, D) by one kernel pass that also sums db = sum_rows dl; then dW = dl^T h and
    dh = dl W, plain GEMMs. dl overwrites s when s is spare (recomputed here, or used up by eager
    autograd), else gets its own buffer. At MNIST sizes (benchmarks/profile_cpu_step.py, 2 threads) this
    is ~0.5 ms per step faster than never forming dl (a g * h pass before dW = s^T (g h), and dh = s W
    scaled by g in place after it: two (M, H) passes instead of one (M, D) pass), in the same memory
    when s is spare."""
    ext = _ext.require_ext()
    M, H = h.shape
    D = weight.shape[0]
    h_rows = h.contiguous()
    weight = weight.contiguous()
    g = grad_ll.contiguous()
    # Outputs not needed are distinct empty tensors (custom ops may not return aliases).
    dh, dweight, dbias, dx = (h.new_empty((0,)) for _ in range(4))
    if need_h or need_weight or need_bias:
        if s.numel() != M * D:
            bias_c = bias.contiguous() if bias is not None else None
            _, s = _bernoulli_forward(h_rows, weight, bias_c, x.contiguous(), n_l, C, True)
            s_is_spare = True
        if need_bias:
            dbias = h.new_empty((D,))
        dtype = _dtype(h)
        if s_is_spare:  # in place: s[r] *= g[r], each row's db term read first
            dl = s
            ext.bernoulli_linear_backward_rows(_ptr(s), _ptr(g), 0, _ptr(dl), 0, _ptr(dbias), M, D, D, dtype)
        else:  # dl[r] = g[r] * s[r] into its own buffer: the same products
            dl = h.new_empty((M, D))
            ext.bernoulli_linear_backward_rows(_ptr(s), _ptr(g), _ptr(s), 0, _ptr(dl), _ptr(dbias), M, D, D, dtype)
        if need_weight:
            dweight = torch.mm(dl.t(), h_rows)
        if need_h:
            dh = torch.mm(dl, weight)
    if need_x:  # dx[n] = W (sum of g h over example n's rows) + b (sum of g over them)
        dx = bernoulli_linear_dx(g, h_rows, weight, bias, n_l, C, x.shape[0])
    return dh, dweight, dbias, dx


def _bernoulli_backward_fake(grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x):
    D = weight.shape[0]
    return (
        h.new_empty(h.shape if need_h else (0,)),
        h.new_empty((D, h.shape[1]) if need_weight else (0,)),
        h.new_empty((D,) if need_bias and bias is not None else (0,)),
        h.new_empty((x.shape[0], D) if need_x else (0,)),
    )


def _bernoulli_setup_context(ctx, inputs, output) -> None:
    h, weight, bias, x, n_l, C, store_s = inputs
    _, s = output
    ctx.layout = (n_l, C)
    ctx.s_used = False
    ctx.save_for_backward(h, weight, bias, x, s)
    ctx.mark_non_differentiable(s)
    ctx.set_materialize_grads(False)


def _bernoulli_vjp(ctx, backward, grad_ll, grad_s):
    needs = ctx.needs_input_grad
    if grad_ll is None or not any(needs[:4]):
        return None, None, None, None, None, None, None
    h, weight, bias, x, s = ctx.saved_tensors
    if ctx.s_used:  # a second backward through the same graph (retain_graph): s is gone, recompute it
        s = s.new_empty((0,))
    elif backward is _bernoulli_backward and s.numel() == h.shape[0] * weight.shape[0] and s.numel():
        # Eager autograd: the backward is the plain function and s is this node's alone; use it up.
        backward = _bernoulli_backward_consuming_s
        ctx.s_used = True
    dh, dweight, dbias, dx = backward(
        grad_ll, h, weight, bias, x, s, *ctx.layout, needs[0], needs[1], bias is not None and needs[2], needs[3]
    )
    return (
        dh if needs[0] else None,
        dweight if needs[1] else None,
        dbias if bias is not None and needs[2] else None,
        dx if needs[3] else None,
        None,
        None,
        None,
    )


_bernoulli_op = FusedOp(
    "bernoulli_loglik_linear_cpu", _bernoulli_op_forward, _bernoulli_fake, _bernoulli_backward,
    _bernoulli_backward_fake, _bernoulli_setup_context, _bernoulli_vjp, device_types="cpu",
)

_RECOMPUTE = False  # see recompute_bernoulli_logits()


@contextlib.contextmanager
def recompute_bernoulli_logits(enabled: bool = True):
    """Within the block, bernoulli_loglik_linear_cpu keeps nothing of size (M, D) for the backward,
    which recomputes the logits (one more (M, H) x (H, D) GEMM; slower, for memory-bound uses)."""
    global _RECOMPUTE
    previous, _RECOMPUTE = _RECOMPUTE, bool(enabled)
    try:
        yield
    finally:
        _RECOMPUTE = previous


def bernoulli_loglik_linear_cpu(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int = 0
) -> Tensor:
    """ll = sum_d x_d l_d - softplus(l_d) for every row of h, l = W h + b.

    h: (N, C, H) with x (N, D) shared by the C rows of example n -> (N, C); or h (M, H) rows with the
    first n_labelled examples one row each and the others C rows each, M = n_l + (N - n_l) C, the layout
    of `bernoulli_loglik_linear_torch` -> (M,). weight: (D, H); bias: (D,) or None.
    The logits GEMM is torch's (MKL); the C++ kernel adds the bias and reduces each row.
    When a gradient is needed, one GEMM writes the logits into the (M, D) buffer that the kernel turns
    in place into s = x - sigmoid(l), kept for the backward (no other (M, D) buffer); without autograd,
    or under `recompute_bernoulli_logits()`, chunks of BERNOULLI_CHUNK_ROWS rows go through one reused
    buffer, so only a chunk of logits ever exists. Row sums in double; exact softplus. Differentiable in
    h, weight, bias and x (x's gradient only when x requires it).
    """
    C = check_bernoulli_linear_inputs(h, weight, bias, x, n_labelled)
    _check_tensors("bernoulli_loglik_linear_cpu", {"h": h, "weight": weight, "bias": bias, "x": x})
    _ext.require_ext()
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias, x)
    )
    rows = h.reshape(-1, h.shape[-1]) if h.dim() == 3 else h
    ll, _ = _bernoulli_op(rows, weight, bias, x, n_labelled, C, needs_grad and not _RECOMPUTE)
    return ll.view(h.shape[0], C) if h.dim() == 3 else ll


# ======================================================================================================
# 4. ELBO reduction.
# ======================================================================================================
def _elbo_forward(
    logits_y: Tensor, y_l: Tensor, ll_l: Tensor, kl_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tensor:
    ext = _ext.require_ext()
    logits_y, y_l = logits_y.contiguous(), y_l.contiguous()
    ll_l, kl_l, ll_u, kl_u = (t.contiguous() for t in (ll_l, kl_l, ll_u, kl_u))
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    loss = logits_y.new_empty((n,))
    ext.elbo_reduction_forward(
        _ptr(logits_y), _ptr(y_l), _ptr(ll_l), _ptr(kl_l), _ptr(ll_u), _ptr(kl_u), _ptr(loss),
        n_l, n - n_l, C, alpha, _dtype(logits_y),
    )
    return loss


def _elbo_backward(
    grad: Tensor, logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous."""
    ext = _ext.require_ext()
    grad, logits_y, y_l = grad.contiguous(), logits_y.contiguous(), y_l.contiguous()
    ll_u, kl_u = ll_u.contiguous(), kl_u.contiguous()
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    n_u = n - n_l
    dlogits = logits_y.new_empty((n, C))
    dll_l, dkl_l = logits_y.new_empty((n_l,)), logits_y.new_empty((n_l,))
    dll_u, dkl_u = logits_y.new_empty((n_u, C)), logits_y.new_empty((n_u, C))
    ext.elbo_reduction_backward(
        _ptr(grad), _ptr(logits_y), _ptr(y_l), _ptr(ll_u), _ptr(kl_u),
        _ptr(dlogits), _ptr(dll_l), _ptr(dkl_l), _ptr(dll_u), _ptr(dkl_u),
        n_l, n_u, C, alpha, _dtype(logits_y),
    )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u


_elbo_op = elbo_fused_op("cpu", _elbo_forward, _elbo_backward, device_types="cpu")


def elbo_reduction_cpu(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float) -> Tensor:
    """Per-example M2 losses (n_l + n_u,), labelled first, by one C++ kernel (and one for the backward).

    logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64 in [0, C) (checked); ll_l, kl_l:
    (n_l,); ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x).
    labelled: kl - ll + log C - alpha * log q(y|x); unlabelled: sum_c q_c (kl_c - ll_c + log C + log q_c).
    Stable log-softmax; everything in double, rounded once. Differentiable in logits_y, ll_*, kl_*.
    """
    check_elbo_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    _check_tensors(
        "elbo_reduction_cpu",
        {"logits_y": logits_y, "ll_l": ll_l, "kl_l": kl_l, "ll_u": ll_u, "kl_u": kl_u},
        {"y_l": y_l},
    )
    _ext.require_ext()
    return _elbo_op(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, float(alpha))


# ======================================================================================================
# The backend.
# ======================================================================================================
def cpu_ops():
    """The `cpu` backend's BackendOps (ssvae_fast.backends); RuntimeError when the extension is missing."""
    from ..backends import BackendOps

    _ext.require_ext()
    return BackendOps(
        name="cpu",
        class_conditional_activation=class_conditional_activation_cpu,
        gaussian_reparam_kl=gaussian_reparam_kl_cpu,
        bernoulli_loglik_linear=bernoulli_loglik_linear_cpu,
        elbo_reduction=elbo_reduction_cpu,
    )
