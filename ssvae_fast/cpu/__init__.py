"""The `cpu` backend's kernel launchers: C++/OpenMP kernels of the compiled extension `ssvae_fast._C`
(csrc/cpu/<op>.cpp, formulas and VJPs in the headers) for the elementwise and reduction work, torch (MKL
or oneDNN) for every GEMM. One module per fused op, each defining the op's `forward` and `backward` with
the custom-op signatures of `ssvae_fast/ops/<op>.py`, which holds the op's other faces.

The launchers make inputs contiguous at the boundary, allocate the outputs and pass raw pointers and
sizes to the kernels. Numerics: bfloat16, float32 and float64 (one dtype for all float inputs of an op;
int64 class indices; under torch.autocast("cpu") the inputs are cast by the rule every compiled backend
shares, `ops.glue.cast_for_backend`); float32 elementwise functions are vectorized polynomials exact to
<= 2 ulp (csrc/cpu/vec_math.h), float64 uses libm; bfloat16 is loaded into float32, computed as float32
and rounded to bfloat16 (nearest even) only where a GEMM reads the result next (csrc/cpu/bfloat16.h); the
GEMMs of bfloat16 inputs are torch's bfloat16 GEMMs (float32 accumulation). Every reduction accumulates in
double, and the reductions that feed no GEMM (log-likelihoods, KLs, losses: `REDUCTIONS_IN_COMPUTE_DTYPE`)
come back in the compute dtype, float32 for bfloat16 inputs; exact softplus (no threshold) for every finite
input. Deterministic: no atomics; reductions over rows use a fixed partition
into blocks that depends only on the sizes, then sum the blocks in order, so results are bitwise
reproducible run to run (and across thread counts for the kernels; MKL's GEMMs are reproducible run to
run at a fixed thread count). Second derivatives are not implemented.

Threads: the kernels use OpenMP and the GEMMs MKL; both run on torch's OpenMP runtime (the extension
resolves libgomp.so.1 to the copy torch already loaded), so `torch.set_num_threads` sets both and the two
never oversubscribe the cores.
"""

# The kernels return the per-row reductions (log-likelihoods, KLs, losses) in the compute dtype: float32 for
# bfloat16 inputs (`ssvae_fast.ops.glue.reduction_dtype`). Each op module that has one imports this.
REDUCTIONS_IN_COMPUTE_DTYPE = True
