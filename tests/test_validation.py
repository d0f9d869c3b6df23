"""Argument checks at the public boundary (ssvae_fast/validation.py): `M2`'s constructor, `loss`, `predict`,
`sample`, `style_transfer` and every public op.

- a table of bad inputs, each raising the exception type it names, with a message that names the argument
  and says what was expected and what was given;
- the value checks' switch (`set_validation`, SSVAE_FAST_VALIDATION=0): off, a NaN pixel goes through; the
  structural checks stay on; the handle restores the previous setting;
- one value check per `M2.loss` call: the ops it calls do not check again what it checked.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch

import ssvae_fast
from ssvae_fast import M2, set_validation, validation, validation_enabled
from ssvae_fast.ops import bernoulli_loglik_linear, class_conditional_activation, elbo_reduction, gaussian_reparam_kl
from tests.op_checks import device_of, on_backends

D, C, Z = 12, 3, 2


def _model(**kwargs):
    torch.manual_seed(0)
    return M2(D, C, Z, hidden=(8,), backend="torch", **kwargs)


def _batch():
    g = torch.Generator().manual_seed(1)
    return dict(x_l=torch.rand(4, D, generator=g), y_l=torch.tensor([0, 1, 2, 0]), x_u=torch.rand(5, D, generator=g))


def _with(t, index, value):
    t = t.clone()
    t.view(-1)[index] = value
    return t


def _loss(**changes):
    """model.loss on a good batch with `changes` (x_l, y_l, x_u, alpha and keyword arguments) applied."""

    def call():
        args = dict(_batch(), alpha=1.0)
        args.update(changes)
        x_l, y_l, x_u = args.pop("x_l"), args.pop("y_l"), args.pop("x_u")
        return _model().loss(x_l, y_l, x_u, **args)

    return call


def _constructor(*args, **kwargs):
    return lambda: M2(*args, **kwargs)


def _method(name, *args, **kwargs):
    return lambda: getattr(_model(), name)(*args, **kwargs)


_X = torch.rand(4, D, generator=torch.Generator().manual_seed(2))


# (id, call, exception type, the argument its message must name)
BAD_INPUTS = [
    # the constructor
    ("x_dim zero", _constructor(0, C, Z), ValueError, "x_dim"),
    ("x_dim float", _constructor(12.5, C, Z), TypeError, "x_dim"),
    ("n_classes one", _constructor(D, 1, Z), ValueError, "n_classes"),
    ("z_dim string", _constructor(D, C, "2"), TypeError, "z_dim"),
    ("z_dim bool", _constructor(D, C, True), TypeError, "z_dim"),
    ("hidden zero size", _constructor(D, C, Z, hidden=(8, 0)), ValueError, "hidden"),
    ("hidden string", _constructor(D, C, Z, hidden="8"), TypeError, "hidden"),
    ("encoder_hidden empty", _constructor(D, C, Z, encoder_hidden=()), ValueError, "encoder_hidden"),
    ("decoder needs a layer", _constructor(D, C, Z, hidden=()), ValueError, "hidden"),
    ("activation unknown", _constructor(D, C, Z, activation="tanh"), ValueError, "activation"),
    ("backend unknown", _constructor(D, C, Z, backend="fortran"), ValueError, "backend"),
    ("backend not a string", _constructor(D, C, Z, backend=None), TypeError, "backend"),
    # loss: pixels
    ("x_l NaN pixel", _loss(x_l=_with(_batch()["x_l"], 5, math.nan)), ValueError, "x_l"),
    ("x_u infinite pixel", _loss(x_u=_with(_batch()["x_u"], 7, math.inf)), ValueError, "x_u"),
    ("x_u pixel above 1", _loss(x_u=_with(_batch()["x_u"], 0, 1.5)), ValueError, "x_u"),
    ("x_l negative pixel", _loss(x_l=_with(_batch()["x_l"], 3, -0.25)), ValueError, "x_l"),
    # loss: alpha
    ("alpha NaN", _loss(alpha=math.nan), ValueError, "alpha"),
    ("alpha infinite", _loss(alpha=math.inf), ValueError, "alpha"),
    ("alpha negative", _loss(alpha=-1.0), ValueError, "alpha"),
    ("alpha string", _loss(alpha="1"), TypeError, "alpha"),
    ("alpha NaN tensor", _loss(alpha=torch.tensor(math.nan)), ValueError, "alpha"),
    # loss: labels
    ("y_l out of range", _loss(y_l=torch.tensor([0, 1, 3, 0])), ValueError, "y_l"),
    ("y_l negative", _loss(y_l=torch.tensor([0, -1, 2, 0])), ValueError, "y_l"),
    ("y_l float", _loss(y_l=torch.tensor([0.0, 1.0, 2.0, 0.0])), TypeError, "y_l"),
    ("y_l int32", _loss(y_l=torch.tensor([0, 1, 2, 0], dtype=torch.int32)), TypeError, "y_l"),
    ("y_l shorter than x_l", _loss(y_l=torch.tensor([0, 1, 2])), ValueError, "y_l"),
    ("y_l None with x_l", _loss(y_l=None), ValueError, "y_l"),
    ("y_l a list", _loss(y_l=[0, 1, 2, 0]), TypeError, "y_l"),
    # loss: inputs' shapes, types, dtypes, devices
    ("x_l wrong D", _loss(x_l=torch.rand(4, D - 1)), ValueError, "x_l"),
    ("x_l 1-D", _loss(x_l=torch.rand(D), y_l=torch.tensor([0])), ValueError, "x_l"),
    ("x_u images", _loss(x_u=torch.rand(5, 1, 3, 4)), ValueError, "x_u"),
    ("x_u integer", _loss(x_u=torch.randint(0, 2, (5, D))), TypeError, "x_u"),
    ("x_l a list", _loss(x_l=[[0.0] * D] * 4), TypeError, "x_l"),
    ("x_l float64 for a float32 model", _loss(x_l=torch.rand(4, D, dtype=torch.float64)), TypeError, "x_l"),
    ("x_u float64 for a float32 model", _loss(x_u=torch.rand(5, D, dtype=torch.float64)), TypeError, "x_u"),
    ("x_l on another device", _loss(x_l=torch.rand(4, D, device="meta")), ValueError, "x_l"),
    ("no example", _loss(x_l=None, y_l=None, x_u=None), ValueError, "x_l and x_u"),
    # loss: noise and options
    ("eps_l wrong shape", _loss(eps_l=torch.randn(4, Z + 1)), ValueError, "eps_l"),
    ("eps_u missing class axis", _loss(eps_u=torch.randn(5, Z)), ValueError, "eps_u"),
    ("eps_u integer", _loss(eps_u=torch.zeros(5, C, Z, dtype=torch.int64)), TypeError, "eps_u"),
    ("eps_l float64", _loss(eps_l=torch.randn(4, Z, dtype=torch.float64)), TypeError, "eps_l"),
    ("eps_u a list", _loss(eps_u=[0.0]), TypeError, "eps_u"),
    ("reduction unknown", _loss(reduction="avg"), ValueError, "reduction"),
    ("chunk_size zero", _loss(chunk_size=0), ValueError, "chunk_size"),
    ("chunk_size float", _loss(chunk_size=2.5), TypeError, "chunk_size"),
    ("generator an int", _loss(generator=3), TypeError, "generator"),
    # predict, style_transfer, sample
    ("predict NaN pixel", _method("predict", _with(_X, 2, math.nan)), ValueError, "x"),
    ("predict wrong D", _method("predict", torch.rand(4, D + 1)), ValueError, "x"),
    ("predict a list", _method("predict", [[0.5] * D]), TypeError, "x"),
    ("predict float64", _method("predict", _X.double()), TypeError, "x"),
    ("style_transfer pixel above 1", _method("style_transfer", _with(_X, 0, 2.0)), ValueError, "x"),
    ("style_transfer 3-D", _method("style_transfer", _X.view(2, 2, D)), ValueError, "x"),
    ("sample label out of range", _method("sample", torch.tensor([0, C])), ValueError, "y"),
    ("sample int32 labels", _method("sample", torch.tensor([0, 1], dtype=torch.int32)), TypeError, "y"),
    ("sample class vector width", _method("sample", torch.rand(2, C + 1)), ValueError, "y"),
    ("sample class vector NaN", _method("sample", _with(torch.rand(2, C), 1, math.nan)), ValueError, "y"),
    ("sample z wrong shape", _method("sample", torch.tensor([0, 1]), torch.zeros(2, Z + 1)), ValueError, "z"),
    ("sample z infinite", _method("sample", torch.tensor([0, 1]), _with(torch.zeros(2, Z), 0, math.inf)),
     ValueError, "z"),
    ("sample z float64", _method("sample", torch.tensor([0, 1]), torch.zeros(2, Z, dtype=torch.float64)),
     TypeError, "z"),
    ("sample mean not a bool", _method("sample", torch.tensor([0, 1]), mean="yes"), TypeError, "mean"),
]


@pytest.mark.parametrize("call,error,argument", [pytest.param(*row[1:], id=row[0]) for row in BAD_INPUTS])
def test_bad_input_raises_naming_the_argument(call, error, argument):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert re.search(rf"(^|[\s:(]){re.escape(argument)}\b", message), message
    assert " must " in message and ", got " in message, message  # what was expected and what was given


def test_the_table_is_large_and_distinct():
    assert len(BAD_INPUTS) >= 25
    assert len({row[0] for row in BAD_INPUTS}) == len(BAD_INPUTS)


def test_messages_say_what_was_given():
    with pytest.raises(ValueError, match=r"x_u must be finite and in \[0, 1\].*got 1 infinite value, finite values "
                                         r"from [0-9.e-]+ to [0-9.e-]+"):
        _loss(x_u=_with(_batch()["x_u"], 7, math.inf))()
    with pytest.raises(ValueError, match=r"M2.loss: y_l must be class indices in \[0, 3\), got values from -1 to 2"):
        _loss(y_l=torch.tensor([0, -1, 2, 0]))()
    with pytest.raises(ValueError, match=r"M2.loss: alpha must be a finite number >= 0, got nan"):
        _loss(alpha=math.nan)()
    with pytest.raises(TypeError, match=r"x_l must be a float32 tensor \(the dtype of the model's parameters\), got "
                                        r"a \(4, 12\) float64 tensor on cpu"):
        _loss(x_l=torch.rand(4, D, dtype=torch.float64))()


# ------------------------------------------------------------------------------------------------------
# The public ops, on every backend that runs here.
# ------------------------------------------------------------------------------------------------------
def _op_cases(device):
    """(id, call, exception type, argument) for the ops' entry points on `device` (backend bound later)."""
    r = lambda *s: torch.rand(*s, device=device)  # noqa: E731
    y = torch.tensor([0, 1], device=device)
    elbo = lambda backend, **kw: lambda: elbo_reduction.elbo_reduction(  # noqa: E731
        kw.get("logits_y", r(5, 3)), kw.get("y_l", y), kw.get("ll_l", r(2)), kw.get("kl_l", r(2)),
        kw.get("ll_u", r(3, 3)), kw.get("kl_u", r(3, 3)), kw.get("alpha", 1.0), backend=backend)
    bern = lambda backend, **kw: lambda: bernoulli_loglik_linear.bernoulli_loglik_linear(  # noqa: E731
        kw.get("h", r(2 + 3 * 3, 4)), kw.get("weight", r(6, 4)), kw.get("bias", r(6)), kw.get("x", r(5, 6)),
        kw.get("n_labelled", 2), backend=backend)
    cca = lambda backend, **kw: lambda: class_conditional_activation.class_conditional_activation(  # noqa: E731
        kw.get("a", r(5, 4)), kw.get("w_y", r(4, 3)), kw.get("classes", y), kw.get("activation", "softplus"),
        backend=backend)
    grk = lambda backend, **kw: lambda: gaussian_reparam_kl.gaussian_reparam_kl(  # noqa: E731
        kw.get("head", r(5, 4)), kw.get("eps", r(5, 2)), backend=backend)
    return [
        ("elbo y_l out of range", lambda b: elbo(b, y_l=torch.tensor([0, 3], device=device)), ValueError, "y_l"),
        ("elbo alpha NaN", lambda b: elbo(b, alpha=math.nan), ValueError, "alpha"),
        ("elbo alpha negative", lambda b: elbo(b, alpha=-0.5), ValueError, "alpha"),
        ("elbo y_l float", lambda b: elbo(b, y_l=y.double()), TypeError, "y_l"),
        ("elbo ll_l a list", lambda b: elbo(b, ll_l=[0.0, 0.0]), TypeError, "ll_l"),
        ("elbo kl_u wrong shape", lambda b: elbo(b, kl_u=r(3, 2)), ValueError, "kl_u"),
        ("elbo ll_l float64", lambda b: elbo(b, ll_l=r(2).double()), TypeError, "ll_l"),
        ("bernoulli x NaN", lambda b: bern(b, x=_with(r(5, 6), 3, math.nan)), ValueError, "x"),
        ("bernoulli x above 1", lambda b: bern(b, x=_with(r(5, 6), 3, 4.0)), ValueError, "x"),
        ("bernoulli n_labelled float", lambda b: bern(b, n_labelled=2.0), TypeError, "n_labelled"),
        ("bernoulli weight wrong H", lambda b: bern(b, weight=r(6, 5)), ValueError, "weight"),
        ("bernoulli bias a list", lambda b: bern(b, bias=[0.0] * 6), TypeError, "bias"),
        ("class-conditional classes out of range",
         lambda b: cca(b, classes=torch.tensor([0, 3], device=device)), ValueError, "classes"),
        ("class-conditional activation", lambda b: cca(b, activation="tanh"), ValueError, "activation"),
        ("class-conditional w_y wrong H", lambda b: cca(b, w_y=r(5, 3)), ValueError, "w_y"),
        ("class-conditional classes int32",
         lambda b: cca(b, classes=torch.tensor([0, 1], dtype=torch.int32, device=device)), TypeError, "classes"),
        ("gaussian eps wrong shape", lambda b: grk(b, eps=r(5, 3)), ValueError, "eps"),
        ("gaussian head a list", lambda b: grk(b, head=[[0.0] * 4] * 5), TypeError, "head"),
        ("gaussian head odd width", lambda b: grk(b, head=r(5, 3)), ValueError, "head"),
    ]


_OP_IDS = [case[0] for case in _op_cases("cpu")]


@pytest.mark.parametrize("case", _OP_IDS)
@pytest.mark.parametrize("backend", on_backends("torch", "cpu", "triton", "cuda"))
def test_op_bad_input_raises_naming_the_argument(backend, case):
    device = device_of(backend)
    _, make, error, argument = next(c for c in _op_cases(device) if c[0] == case)
    with pytest.raises((TypeError, ValueError)) as info:
        make(backend)()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert re.search(rf"\b{re.escape(argument)}\b", str(info.value)), str(info.value)


# ------------------------------------------------------------------------------------------------------
# The switch.
# ------------------------------------------------------------------------------------------------------
def test_switch_off_lets_values_through_and_keeps_structural_checks():
    model, batch = _model(), _batch()
    x_u = _with(batch["x_u"], 4, math.nan)
    assert validation_enabled()
    with set_validation(False):
        assert not validation_enabled()
        loss = model.loss(batch["x_l"], batch["y_l"], x_u, alpha=1.0)
        assert math.isnan(float(loss))  # what the checks exist to prevent
        with pytest.raises(ValueError, match="x_l must be a"):  # shapes are still checked
            model.loss(torch.rand(4, D + 1), batch["y_l"], None, alpha=1.0)
        with pytest.raises(ValueError, match="alpha"):  # and Python values: no synchronization needed
            model.loss(batch["x_l"], batch["y_l"], None, alpha=math.nan)
        out = elbo_reduction.elbo_reduction(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2),
                                            torch.zeros(2), torch.zeros(0, 3), torch.zeros(0, 3), 1.0)
        assert out.shape == (2,)
    assert validation_enabled()
    with pytest.raises(ValueError, match="x_u"):
        model.loss(batch["x_l"], batch["y_l"], x_u, alpha=1.0)


def test_set_validation_handle_keeps_or_restores():
    handle = set_validation(False)
    try:
        assert not validation_enabled()  # ignoring the handle keeps the new value
        with set_validation(True):
            assert validation_enabled()
        assert not validation_enabled()
    finally:
        set_validation(True)
    with pytest.raises(TypeError, match="enabled"):
        set_validation("no")
    assert validation_enabled() and handle is not None
    assert ssvae_fast.set_validation is set_validation


@pytest.mark.parametrize("value,expected", [("0", False), ("off", False), ("1", True), ("", True)])
def test_environment_variable_sets_the_default(value, expected):
    code = "import ssvae_fast; print(ssvae_fast.validation_enabled())"
    env = dict(os.environ, SSVAE_FAST_VALIDATION=value)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("backend", on_backends("reference", "torch", "cpu", "triton"))
def test_loss_reads_values_once(backend, chunk_size, monkeypatch):
    """M2.loss checks its inputs' values with one synchronization (one `run_value_checks`), and the ops it
    calls do not check them again, nor when the backward recomputes a chunk."""
    calls = []
    original = validation.run_value_checks
    monkeypatch.setattr(validation, "run_value_checks", lambda *a: calls.append(a) or original(*a))
    model = _model()
    model.backend = backend
    batch = _batch()
    model.loss(batch["x_l"], batch["y_l"], batch["x_u"], alpha=1.0, chunk_size=chunk_size).backward()
    assert len(calls) == 1
    shapes = [tuple(t.shape) for (_, t) in calls[0][1]]
    assert shapes == [(4, D), (5, D), (4,)]  # x_l, x_u, y_l
    calls.clear()
    with set_validation(False):
        model.loss(batch["x_l"], batch["y_l"], batch["x_u"], alpha=1.0)
    assert calls == []


def test_value_checks_do_not_run_while_tracing():
    """Under torch.compile the checks are skipped (they would need the data); the graph has no break."""
    model, batch = _model(), _batch()

    def loss(x_l, y_l, x_u):
        return model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=torch.zeros(4, Z), eps_u=torch.zeros(5, C, Z))

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(batch["x_l"], batch["y_l"], batch["x_u"])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert not torch.compiler.is_compiling() and validation.checking()
