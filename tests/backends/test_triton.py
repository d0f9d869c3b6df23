"""What only the `triton` backend has; everything it shares with the other backends is tested in
tests/ops and tests/test_backends.py (on a GPU, and under Triton's interpreter on a CPU).

- the interpreter shim that lets kernels with runtime loop bounds run under triton <= 3.6 with numpy >= 2.4.
"""

from __future__ import annotations

import pytest

from ssvae_fast import backends
from tests.op_checks import HAS_CUDA

pytestmark = pytest.mark.skipif(
    backends.unavailable_reason("triton") is not None, reason=f"{backends.unavailable_reason('triton')}"
)


@pytest.mark.skipif(HAS_CUDA, reason="the interpreter compatibility shim applies only under TRITON_INTERPRET=1")
def test_interpreter_scalar_loop_bound_compat(monkeypatch):
    """A runtime int argument works as a loop bound with an interpreter that converts it the way triton 3.6's
    does (int() of its shape-(1,) array, refused by numpy >= 2.4): the shim installed by ssvae_fast.triton
    reads the one element, and the interpreter's patch scope still restores tensor.__index__ after a launch."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    import ssvae_fast.triton as st

    assert st.interpreting()
    had_index = "__index__" in vars(tl.core.tensor)

    def patch_lang_as_in_triton_3_6(fn):
        scope = interpreter._LangPatchScope()
        scope.set_attr(tl.core.tensor, "__index__", lambda self: int(self.handle.data))
        return scope

    monkeypatch.setattr(interpreter, "_patch_lang", patch_lang_as_in_triton_3_6)
    st._interpreter_scalar_index_compat()
    assert interpreter._patch_lang is not patch_lang_as_in_triton_3_6
    scope = interpreter._patch_lang(None)
    bound = tl.core.tensor(interpreter.TensorHandle(np.array([7], dtype=np.int32), tl.int32), tl.int32)
    assert list(range(0, bound, 3)) == [0, 3, 6]
    scope.restore()
    assert ("__index__" in vars(tl.core.tensor)) == had_index
