"""The `cuda` backend's four ops: launchers (check, allocate, launch) and `torch.library.custom_op`s around
the CUDA kernels of the compiled extension `ssvae_fast._C_cuda` (csrc/cuda/<op>.cu).

Each op has the signature and semantics of its plain-torch face in this package
(`class_conditional_activation_torch`, `gaussian_reparam_kl_torch`, `bernoulli_loglik_linear_torch`,
`elbo_reduction_torch`). Every forward kernel is a custom op `ssvae_fast::<op>_cuda` with a fake (meta)
implementation and an autograd formula that calls a second custom op `ssvae_fast::<op>_cuda_backward`, so
`torch.compile` traces through them without graph breaks and CUDA graphs capture them: the launchers never
synchronize with the host, launch on torch's current stream (`torch.cuda.current_stream().cuda_stream`)
and take their workspaces from torch's caching allocator. `ops.glue.FusedOp` registers each pair; eager
calls reach the same implementations without the dispatcher's round trip.

Row layout: M2's labelled examples (one class each) and unlabelled ones (every class) go through the
network as one batch of rows, labelled first. `class_conditional_activation` given classes (n_l,) for the
first n_l of N rows returns n_l + (N - n_l) * C rows (row i < n_l: example i, class classes[i]; row
n_l + j * C + c: example n_l + j, class c), and `bernoulli_loglik_linear`'s 2-D form takes h in that layout
with n_labelled = n_l and scores each row against its example's x. The kernels map rows to examples
themselves: nothing of size (rows, H) or (rows, D) is concatenated or repeated.

Devices and dtypes: CUDA tensors, one device per call; float32, float64, bfloat16 or float16, one dtype
for all float inputs of an op; class indices int64. Inputs are passed with their strides (no copies),
except that a 3-D h must be viewable as (N*C, H) and the output gradients of the class-conditional op are
made contiguous. Every reduction accumulates in float32 (float64 for float64 inputs); outputs have the input
dtype. Under `torch.autocast("cuda")` the public functions cast first, as torch would: the Bernoulli op (a
GEMM, like the linear layers autocast casts) takes its float32/16-bit inputs in the autocast dtype; the
elementwise ops promote mixed inputs to the widest dtype (a bf16 activation meeting a float32 weight
column runs in float32). Outside autocast, mixed dtypes are an error. No float atomics: results are
bitwise reproducible run to run on the same GPU. Gradients flow to every float input; second derivatives
are not implemented. Empty inputs give empty outputs and zero gradients. Class indices are not
range-checked on the device (no host sync): an out-of-range class gives NaN, never an out-of-bounds read.

Precision of the Bernoulli GEMM (the only matrix product inside a kernel), `set_precision`:

    "tf32" (default)  tensor cores through nvcuda::wmma: float32 inputs rounded to TF32 (10-bit mantissa),
                      bfloat16/float16 inputs as they are; fp32 accumulation. The speed setting.
    "ieee"            FMA tiles on the CUDA cores: exact float products (the equivalence tests use it).

float64 always uses exact float64 FMAs. The environment variable SSVAE_FAST_CUDA_PRECISION sets the
default. The backward GEMMs of that op run in torch (cuBLAS) and follow torch's own matmul settings
(`torch.backends.cuda.matmul.allow_tf32`, False by default).

Memory: when a gradient is needed, the Bernoulli forward keeps s = x - sigmoid(l), (M, D) in the input
dtype, for the backward (docs/design.md section 2, item 3: "produce dl in forward"); the logits themselves
never reach device memory.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from real
# annotations (string annotations are only understood by recent torch versions).
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from .bernoulli_loglik_linear import bernoulli_linear_vjp_from_s, check_bernoulli_linear_inputs
from .class_conditional import check_class_conditional_inputs, class_conditional_output_shape
from .elbo import check_elbo_inputs
from .gaussian import check_gaussian_inputs
from .glue import (
    autocast_inputs, bernoulli_fused_op, class_conditional_fused_op, elbo_fused_op, gaussian_fused_op
)

__all__ = [
    "cuda_ops",
    "class_conditional_activation_cuda",
    "gaussian_reparam_kl_cuda",
    "bernoulli_loglik_linear_cuda",
    "elbo_reduction_cuda",
    "PRECISIONS",
    "get_precision",
    "set_precision",
]

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}
_ACTIVATIONS = ("softplus", "relu")
PRECISIONS = ("ieee", "tf32")


# ------------------------------------------------------------------------------------------------------
# Settings.
# ------------------------------------------------------------------------------------------------------
def _default_precision() -> str:
    value = os.environ.get("SSVAE_FAST_CUDA_PRECISION", "tf32")
    if value not in PRECISIONS:
        raise ValueError(f"SSVAE_FAST_CUDA_PRECISION must be one of {PRECISIONS}, got {value!r}")
    return value


_settings = {"precision": _default_precision()}


def get_precision() -> str:
    """The precision of the Bernoulli kernel's float32/16-bit GEMM: "tf32" (default) or "ieee"."""
    return _settings["precision"]


class _Restore:
    """Returned by `set_precision`: ignoring it keeps the new value; `with` restores the previous one."""

    def __init__(self, previous: str):
        self._previous = previous

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _settings["precision"] = self._previous


def set_precision(precision: str) -> _Restore:
    """Set the Bernoulli GEMM precision ("ieee" or "tf32"), read at every call (also inside torch.compile'd
    graphs, which guard on it). Usable as a context manager: `with set_precision("ieee"): ...`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = _settings["precision"]
    _settings["precision"] = precision
    return _Restore(previous)


# ------------------------------------------------------------------------------------------------------
# Checks and launch helpers.
# ------------------------------------------------------------------------------------------------------
def _check_tensors(op: str, floats: dict, ints: Optional[dict] = None) -> None:
    """One CUDA device and one float dtype among _DTYPE_NAMES for `floats`, int64 for `ints`; ValueError
    (devices) or TypeError (dtypes) naming the offending tensors otherwise. None entries are skipped."""
    floats = {k: v for k, v in floats.items() if v is not None}
    ints = {k: v for k, v in (ints or {}).items() if v is not None}
    everything = {**floats, **ints}
    for name, t in everything.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    devices = {t.device for t in everything.values()}
    if len(devices) != 1:
        listed = ", ".join(f"{k} on {t.device}" for k, t in everything.items())
        raise ValueError(f"{op}: all tensors must be on one CUDA device, got {listed}")
    device = next(iter(devices))
    if device.type != "cuda":
        raise ValueError(
            f"{op}: the cuda backend runs on CUDA tensors, got tensors on {device}; move them with "
            ".to('cuda') or use backend 'torch' or 'cpu' on the CPU"
        )
    dtypes = {t.dtype for t in floats.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPE_NAMES:
        listed = ", ".join(f"{k} {t.dtype}" for k, t in floats.items())
        raise TypeError(f"{op}: float inputs must share one dtype among {tuple(_DTYPE_NAMES)}, got {listed}")
    for name, t in ints.items():
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64 class indices, got {t.dtype}")


def _require_cuda(op: str, *tensors: Optional[Tensor]) -> None:
    """Guard of every custom-op implementation (reached directly through torch.ops.ssvae_fast.*)."""
    for t in tensors:
        if t is not None and t.device.type != "cuda":
            raise ValueError(f"{op}: the cuda backend's kernels need CUDA tensors, got a tensor on {t.device}")


def _ext_module():
    """ssvae_fast._C_cuda with this backend's kernels; RuntimeError saying how to get it otherwise."""
    ext = _ext.require_cuda_ext()
    if not hasattr(ext, "bernoulli_loglik_linear_forward"):
        raise RuntimeError(
            "ssvae_fast._C_cuda was built before the cuda backend's kernels existed; rebuild it where nvcc is "
            "on PATH: `SSVAE_FAST_CUDA=1 pip install -e .` (or `python setup.py build_ext --inplace`)"
        )
    return ext


def _stream(t: Tensor) -> int:
    """torch's current stream on t's device, as the integer the extension takes."""
    return torch.cuda.current_stream(t.device).cuda_stream


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


# ======================================================================================================
# 1. Class-conditional first layer: act(a + w_y[:, c]).
# ======================================================================================================
def _n_labelled(classes: Optional[Tensor]) -> int:
    """Rows of a with a given class: classes (n_l,) labels the first n_l rows; None labels none."""
    return 0 if classes is None else classes.shape[0]


def _class_conditional_forward(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H), labelled rows first, for classes (n_l,)."""
    _require_cuda("class_conditional_activation_cuda", a, w_y, classes)
    N, H = a.shape
    C = w_y.shape[1]
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    if out.numel() == 0:
        return out
    ext = _ext_module()
    with torch.cuda.device(a.device):
        ext.class_conditional_forward(
            a_ptr=a.data_ptr(), w_y_ptr=w_y.data_ptr(), classes_ptr=_ptr(classes), out_ptr=out.data_ptr(),
            N=N, n_l=_n_labelled(classes), H=H, C=C,
            stride_an=a.stride(0), stride_ah=a.stride(1), stride_wh=w_y.stride(0), stride_wc=w_y.stride(1),
            stride_cls=0 if classes is None else classes.stride(0),
            activation=activation, dtype=_DTYPE_NAMES[a.dtype], stream=_stream(a),
        )
    return out


def _class_conditional_backward_impl(
    grad: Tensor, a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str
) -> Tuple[Tensor, Tensor]:
    """(da (N, H), dw_y (H, C)), both contiguous, from grad in the forward's output layout ((N, C, H), or
    (n_l + (N - n_l) * C, H) rows for classes (n_l,)); see the VJP in csrc/cuda/class_conditional.cu."""
    _require_cuda("class_conditional_activation_cuda_backward", grad, a, w_y, classes)
    N, H = a.shape
    C = w_y.shape[1]
    da = a.new_empty((N, H))
    dw_y = a.new_empty((H, C))
    if da.numel() == 0 and dw_y.numel() == 0:
        return da, dw_y
    ext = _ext_module()
    grad = grad.contiguous()
    # Per-row-block partial sums of dw_y, summed in a fixed order by a second kernel (zeros when N == 0).
    dw_partial = a.new_empty(
        (_cdiv(N, ext.CLASS_CONDITIONAL_BACKWARD_ROWS), C, H), dtype=_compute_dtype(a.dtype)
    )
    with torch.cuda.device(a.device):
        ext.class_conditional_backward(
            grad_ptr=grad.data_ptr(), a_ptr=a.data_ptr(), w_y_ptr=w_y.data_ptr(), classes_ptr=_ptr(classes),
            da_ptr=da.data_ptr(), dw_partial_ptr=dw_partial.data_ptr(), dw_y_ptr=dw_y.data_ptr(),
            N=N, n_l=_n_labelled(classes), H=H, C=C,
            stride_an=a.stride(0), stride_ah=a.stride(1), stride_wh=w_y.stride(0), stride_wc=w_y.stride(1),
            stride_cls=0 if classes is None else classes.stride(0),
            activation=activation, dtype=_DTYPE_NAMES[a.dtype], stream=_stream(a),
        )
    return da, dw_y


_class_conditional_op = class_conditional_fused_op(
    "cuda", _class_conditional_forward, _class_conditional_backward_impl
)


def class_conditional_activation_cuda(
    a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str
) -> Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)], by the CUDA kernels.

    a: (N, H) = W_v v + b; w_y: (H, C) class columns (any strides: a column slice of the weight is read in
    place). classes None -> (N, C, H), out[n, c] = act(a[n] + w_y[:, c]). classes (n_l,) int64, n_l <= N:
    the first n_l rows take one class each, the others every class -> (n_l + (N - n_l) * C, H), labelled
    rows first: out[i] = act(a[i] + w_y[:, classes[i]]) for i < n_l, out[n_l + j * C + c] =
    act(a[n_l + j] + w_y[:, c]) (n_l = N: (N, H), one class per row). activation: "softplus" or "relu".
    Computes in fp32 (fp64 for fp64 inputs); differentiable in a and w_y (dw_y reduced without atomics:
    deterministic).
    """
    check_class_conditional_inputs(a, w_y, classes)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
    a, w_y = autocast_inputs((a, w_y), matmul=False)
    _check_tensors("class_conditional_activation_cuda", {"a": a, "w_y": w_y}, {"classes": classes})
    return _class_conditional_op(a, w_y, classes, activation)


# ======================================================================================================
# 2. Gaussian head epilogue: [mu, logvar], eps -> z, kl.
# ======================================================================================================
def _gaussian_forward(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    _require_cuda("gaussian_reparam_kl_cuda", head, eps)
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,))
    if R == 0:
        return z, kl
    ext = _ext_module()
    with torch.cuda.device(head.device):
        ext.gaussian_reparam_kl_forward(
            head_ptr=head.data_ptr(), eps_ptr=eps.data_ptr(), z_ptr=z.data_ptr(), kl_ptr=kl.data_ptr(),
            R=R, Z=Z,
            stride_hr=head.stride(0), stride_hz=head.stride(1), stride_er=eps.stride(0), stride_ez=eps.stride(1),
            dtype=_DTYPE_NAMES[head.dtype], stream=_stream(head),
        )
    return z, kl


def _gaussian_backward_impl(head: Tensor, eps: Tensor, grad_z: Tensor, grad_kl: Tensor) -> Tuple[Tensor, Tensor]:
    """(d head (R, 2Z), d eps (R, Z)), contiguous; see the VJP in csrc/cuda/gaussian.cu."""
    _require_cuda("gaussian_reparam_kl_cuda_backward", head, eps, grad_z, grad_kl)
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z))
    deps = head.new_empty((R, Z))
    if R * Z == 0:
        return dhead, deps
    ext = _ext_module()
    with torch.cuda.device(head.device):
        ext.gaussian_reparam_kl_backward(
            head_ptr=head.data_ptr(), eps_ptr=eps.data_ptr(), grad_z_ptr=grad_z.data_ptr(),
            grad_kl_ptr=grad_kl.data_ptr(), dhead_ptr=dhead.data_ptr(), deps_ptr=deps.data_ptr(),
            R=R, Z=Z,
            stride_hr=head.stride(0), stride_hz=head.stride(1), stride_er=eps.stride(0), stride_ez=eps.stride(1),
            stride_gzr=grad_z.stride(0), stride_gzz=grad_z.stride(1), stride_gkl=grad_kl.stride(0),
            dtype=_DTYPE_NAMES[head.dtype], stream=_stream(head),
        )
    return dhead, deps


_gaussian_op = gaussian_fused_op("cuda", _gaussian_forward, _gaussian_backward_impl)


def gaussian_reparam_kl_cuda(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z = mu + exp(logvar / 2) * eps (R, Z) and
    kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,), by one CUDA kernel (and one for the backward,
    to head and eps). KL accumulates in fp32 (fp64 for fp64 inputs). Any strides."""
    check_gaussian_inputs(head, eps)
    head, eps = autocast_inputs((head, eps), matmul=False)
    _check_tensors("gaussian_reparam_kl_cuda", {"head": head, "eps": eps})
    return _gaussian_op(head, eps)


# ======================================================================================================
# 3. Decoder output layer + Bernoulli log-likelihood.
# ======================================================================================================
def _bernoulli_forward_launch(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Optional[Tensor], ll: Tensor,
    n_labelled: int, n_classes: int, precision: str,
) -> None:
    """ll (M,) and, when s is given, s (M, D), both contiguous and preallocated; h (M, H) rows in the 2-D
    layout (n_labelled rows first, then n_classes per remaining example of x), M > 0."""
    M, H = h.shape
    D = weight.shape[0]
    ext = _ext_module()
    ll_partial = h.new_empty((_cdiv(D, ext.BERNOULLI_BLOCK_D), M), dtype=_compute_dtype(h.dtype))
    with torch.cuda.device(h.device):
        ext.bernoulli_loglik_linear_forward(
            h_ptr=h.data_ptr(), weight_ptr=weight.data_ptr(), bias_ptr=_ptr(bias), x_ptr=x.data_ptr(),
            s_ptr=_ptr(s), ll_partial_ptr=ll_partial.data_ptr(), ll_ptr=ll.data_ptr(),
            # C = 0 only when M == n_labelled (no enumerated row): the kernel never divides by it then, and
            # takes max(C, 1) so that its C >= 1 invariant holds for every M > 0.
            M=M, D=D, H=H, C=max(n_classes, 1), n_l=n_labelled,
            stride_hm=h.stride(0), stride_hk=h.stride(1),
            stride_wd=weight.stride(0), stride_wk=weight.stride(1),
            stride_b=0 if bias is None else bias.stride(0),
            stride_xn=x.stride(0), stride_xd=x.stride(1),
            precision="ieee" if h.dtype == torch.float64 else precision,
            dtype=_DTYPE_NAMES[h.dtype], stream=_stream(h),
        )


def _bernoulli_forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int, n_classes: int, store_s: bool,
    precision: str,
) -> Tuple[Tensor, Tensor]:
    """h (M, H) rows in the 2-D layout -> (ll (M,), s (M, D) = x - sigmoid(l) when store_s, else an empty
    1-D tensor)."""
    _require_cuda("bernoulli_loglik_linear_cuda", h, weight, bias, x)
    M = h.shape[0]
    D = weight.shape[0]
    ll = h.new_empty((M,))
    s = h.new_empty((M, D) if store_s else (0,))
    if M > 0:
        _bernoulli_forward_launch(h, weight, bias, x, s if store_s else None, ll, n_labelled, n_classes, precision)
    return ll, s


def _bernoulli_backward_impl(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Tensor, n_labelled: int,
    n_classes: int, precision: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,) or empty without bias, dx (N, D)); the VJP of
    csrc/cuda/bernoulli_loglik_linear.cu as cuBLAS GEMMs on s. A 1-D s (not stored by the forward) is
    recomputed by the forward kernel first."""
    _require_cuda("bernoulli_loglik_linear_cuda_backward", grad_ll, h, weight, bias, x, s)
    M = h.shape[0]
    N, D = x.shape
    if s.dim() != 2:
        s = h.new_empty((M, D))
        if M > 0:
            _bernoulli_forward_launch(h, weight, bias, x, s, h.new_empty((M,)), n_labelled, n_classes, precision)
    # n_examples = N: with C = 0 the examples past the labelled ones have no rows (their dx is 0).
    return bernoulli_linear_vjp_from_s(s, grad_ll.reshape(M), h, weight, bias, n_labelled, n_classes, n_examples=N)


_bernoulli_op = bernoulli_fused_op(
    "cuda", _bernoulli_forward, _bernoulli_backward_impl, lambda inputs: (inputs[7],)  # precision
)


def bernoulli_loglik_linear_cuda(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int = 0,
    precision: Optional[str] = None,
) -> Tensor:
    """ll = sum_d x_d l_d - softplus(l_d) for every row of h, l = W h + b, the logits never written to memory.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of example n -> ll (N, C) (n_labelled must be 0).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C with n_l = n_labelled: row i < n_l scores x[i], row
    n_l + j * C + c scores x[n_l + j] (the layout of `class_conditional_activation_cuda` given n_l classes)
    -> ll (M,). weight: (D, H); bias: (D,) or None; x: (N, D). Returns h's dtype. precision: "tf32" (tensor
    cores) or "ieee" (exact FMAs); None reads `get_precision()`; float64 is always exact. Accumulates in fp32
    (fp64 for fp64 inputs). Differentiable in h, weight, bias and x; deterministic. When a gradient is
    needed the forward keeps s = x - sigmoid(l), (M, D), for the backward.
    """
    n_classes = check_bernoulli_linear_inputs(h, weight, bias, x, n_labelled)
    h, weight, bias, x = autocast_inputs((h, weight, bias, x), matmul=True)
    _check_tensors("bernoulli_loglik_linear_cuda", {"h": h, "weight": weight, "bias": bias, "x": x})
    if precision is None:
        precision = get_precision()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias, x))
    if h.dim() == 3:  # every class of every example: the 2-D form with n_l = 0
        N, _, H = h.shape
        rows = h.reshape(N * n_classes, H)  # a view when the strides allow it (the kernel takes any strides)
        ll, _ = _bernoulli_op(rows, weight, bias, x, 0, n_classes, needs_grad, precision)
        return ll.view(N, n_classes)
    ll, _ = _bernoulli_op(h, weight, bias, x, n_labelled, n_classes, needs_grad, precision)
    return ll


# ======================================================================================================
# 4. ELBO reduction.
# ======================================================================================================
def _elbo_forward(
    logits_y: Tensor, y_l: Tensor, ll_l: Tensor, kl_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tensor:
    _require_cuda("elbo_reduction_cuda", logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    n, C = logits_y.shape
    n_l, n_u = y_l.shape[0], ll_u.shape[0]
    loss = logits_y.new_empty((n,))
    if n == 0:
        return loss
    ext = _ext_module()
    with torch.cuda.device(logits_y.device):
        ext.elbo_reduction_forward(
            logits_y_ptr=logits_y.data_ptr(), y_l_ptr=y_l.data_ptr(), ll_l_ptr=ll_l.data_ptr(),
            kl_l_ptr=kl_l.data_ptr(), ll_u_ptr=ll_u.data_ptr(), kl_u_ptr=kl_u.data_ptr(), loss_ptr=loss.data_ptr(),
            n_l=n_l, n_u=n_u, C=C, alpha=alpha,
            stride_lr=logits_y.stride(0), stride_lc=logits_y.stride(1), stride_y=y_l.stride(0),
            stride_ll_l=ll_l.stride(0), stride_kl_l=kl_l.stride(0),
            stride_ll_ur=ll_u.stride(0), stride_ll_uc=ll_u.stride(1),
            stride_kl_ur=kl_u.stride(0), stride_kl_uc=kl_u.stride(1),
            dtype=_DTYPE_NAMES[logits_y.dtype], stream=_stream(logits_y),
        )
    return loss


def _elbo_backward(
    grad: Tensor, logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous; see the VJP in csrc/cuda/elbo.cu."""
    _require_cuda("elbo_reduction_cuda_backward", grad, logits_y, y_l, ll_u, kl_u)
    n, C = logits_y.shape
    n_l, n_u = y_l.shape[0], ll_u.shape[0]
    dlogits = logits_y.new_empty((n, C))
    dll_l = logits_y.new_empty((n_l,))
    dkl_l = logits_y.new_empty((n_l,))
    dll_u = logits_y.new_empty((n_u, C))
    dkl_u = logits_y.new_empty((n_u, C))
    if n == 0:
        return dlogits, dll_l, dkl_l, dll_u, dkl_u
    ext = _ext_module()
    with torch.cuda.device(logits_y.device):
        ext.elbo_reduction_backward(
            grad_ptr=grad.data_ptr(), logits_y_ptr=logits_y.data_ptr(), y_l_ptr=y_l.data_ptr(),
            ll_u_ptr=ll_u.data_ptr(), kl_u_ptr=kl_u.data_ptr(), dlogits_y_ptr=dlogits.data_ptr(),
            dll_l_ptr=dll_l.data_ptr(), dkl_l_ptr=dkl_l.data_ptr(), dll_u_ptr=dll_u.data_ptr(),
            dkl_u_ptr=dkl_u.data_ptr(),
            n_l=n_l, n_u=n_u, C=C, alpha=alpha,
            stride_g=grad.stride(0), stride_lr=logits_y.stride(0), stride_lc=logits_y.stride(1),
            stride_y=y_l.stride(0), stride_ll_ur=ll_u.stride(0), stride_ll_uc=ll_u.stride(1),
            stride_kl_ur=kl_u.stride(0), stride_kl_uc=kl_u.stride(1),
            dtype=_DTYPE_NAMES[logits_y.dtype], stream=_stream(logits_y),
        )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u


_elbo_op = elbo_fused_op("cuda", _elbo_forward, _elbo_backward)


def elbo_reduction_cuda(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float) -> Tensor:
    """Per-example M2 losses (n_l + n_u,), labelled first, by one CUDA kernel (and one for the backward).

    logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64 in [0, C) (not checked on the device:
    a label outside gives NaN); ll_l, kl_l: (n_l,); ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x).
    labelled: kl - ll + log C - alpha * log q(y|x); unlabelled: sum_c q_c (kl_c - ll_c + log C + log q_c).
    One warp per row; log-softmax in fp32 (fp64 for fp64 inputs). Differentiable in logits_y, ll_*, kl_*.
    """
    check_elbo_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    logits_y, ll_l, kl_l, ll_u, kl_u = autocast_inputs((logits_y, ll_l, kl_l, ll_u, kl_u), matmul=False)
    _check_tensors(
        "elbo_reduction_cuda",
        {"logits_y": logits_y, "ll_l": ll_l, "kl_l": kl_l, "ll_u": ll_u, "kl_u": kl_u},
        {"y_l": y_l},
    )
    if logits_y.shape[1] < 1:
        raise ValueError("elbo_reduction_cuda: logits_y needs at least one class (log C is undefined for C = 0)")
    return _elbo_op(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, float(alpha))


# ------------------------------------------------------------------------------------------------------
# The backend.
# ------------------------------------------------------------------------------------------------------
def cuda_ops():
    """The `cuda` backend's `BackendOps` (signatures and semantics of the plain-torch ops in ssvae_fast/ops).
    Builds without touching CUDA; the ops need CUDA tensors and the extension ssvae_fast._C_cuda."""
    from ..backends import BackendOps

    return BackendOps(
        name="cuda",
        class_conditional_activation=class_conditional_activation_cuda,
        gaussian_reparam_kl=gaussian_reparam_kl_cuda,
        bernoulli_loglik_linear=bernoulli_loglik_linear_cuda,
        elbo_reduction=elbo_reduction_cuda,
    )
