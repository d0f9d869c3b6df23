"""Tests of the `triton` backend (real kernels on a GPU, TRITON_INTERPRET=1 on a CPU)."""
