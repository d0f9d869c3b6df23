"""Tests of the `cuda` backend (ssvae_fast/ops/cuda_backend.py and the kernels of ssvae_fast._C_cuda)."""
