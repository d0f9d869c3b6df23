"""The benchmark harness of M2's training step, its loss and its fused ops.

Two front ends share it: the report runner `python benchmarks/run.py` (`harness.cli`) and the
pytest-benchmark suite `pytest benchmarks/ --benchmark-only` (benchmarks/conftest.py). Both import it
as the top-level package `harness`, with benchmarks/ on sys.path.

    config      what is benchmarked: model shapes, the labelled mix, providers, modes, sizes, precisions
    cases       the input factory `make_case`, provider availability, `LossRunner`, `CudaGraphTrainStep`
    op_cases    each fused op alone, on the arguments it receives inside the objective
    measure     timing, summaries, the matmul ceiling, peak memory
    grid        one worker per (provider, B), the grid of workers and its JSON document
    report      hardware and version info, markdown tables, the README block
    cli         the command line of benchmarks/run.py

Figures per (mode, provider, B, precision):
    median / q1 / q3 / IQR / stddev of the per-call time over rounds (inputs rotate over a few batches);
    examples/s = B / median; TFLOP/s = matmul FLOPs of the useful (factorized) formulation / median
    (`ssvae_fast.flops.step_flops`), and its fraction of a (B*C, H) x (H, D) matmul timed in the same
    run at the same precision; peak memory of one call (method in the JSON's settings.memory_method).
benchmarks/README.md explains every figure.
"""
