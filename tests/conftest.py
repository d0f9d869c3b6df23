"""Shared pytest setup.

Triton kernels run on a CUDA GPU, or on the CPU in Triton's interpreter, which must be switched on
before anything imports triton: without a GPU, TRITON_INTERPRET=1 is set here (unless the environment
already says otherwise), so the same tests run real kernels on a GPU and the interpreter on a CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
