"""What is benchmarked: the model, the labelled mix, providers, modes, sizes, precisions and timing."""

from __future__ import annotations

from pathlib import Path

SCHEMA = "ssvae_fast.bench/1"

# MNIST-sized M2 as in Kingma et al.: one hidden layer of 500 softplus units in every network, z = 50.
MODEL_SHAPES = {"x_dim": 784, "n_classes": 10, "hidden": 500, "z_dim": 50, "hidden_layers": 1}
ACTIVATION = "softplus"
LABELLED_FRACTION = 0.1  # 10% labelled rows per step: B = 256 -> 26 labelled + 230 unlabelled
ALPHA = 0.1 * 60000 / 100  # Kingma et al.'s alpha for 100 labels of MNIST's 60000, per labelled example
PIXEL_ON_PROBABILITY = 0.13  # binarized inputs ~ Bernoulli(0.13), MNIST's mean pixel intensity
LEARNING_RATE = 1e-3
ROTATING_BATCHES = 4  # pre-generated batches cycled across calls so no cache holds the same inputs

PROVIDERS = (
    "reference",
    "reference-compile",
    "reference-compile-max-autotune",
    "torch",
    "triton",
    "cuda",
    "cpu",
    "pyro",
)
OP_BACKENDS = ("torch", "triton", "cuda", "cpu")
# The order workers run in (tables sort by PROVIDERS): the fused backends and their baselines first, the
# slowest to compile last, so that a run stopped early has already measured what matters most.
RUN_ORDER = ("triton", "cuda", "cpu", "torch", "reference", "reference-compile", "pyro",
             "reference-compile-max-autotune")
CUDAGRAPH_PROVIDERS = ("reference", "torch", "triton", "cuda")
# (name shown in reports, BackendOps field): the four fused ops; class_conditional_activation twice, in
# the encoder's form (labelled examples one class each, the others every class) and the decoder's (one
# class per row).
OP_VARIANTS = {
    "class_conditional_activation[encoder]": "class_conditional_activation",
    "class_conditional_activation[decoder]": "class_conditional_activation",
    "gaussian_reparam_kl": "gaussian_reparam_kl",
    "bernoulli_loglik_linear": "bernoulli_loglik_linear",
    "elbo_reduction": "elbo_reduction",
}
LOSS_MODES = ("loss_forward", "loss_forward_backward", "train_step")
OP_MODES = ("op_forward", "op_forward_backward")
CUDAGRAPH_MODE = "train_step_cudagraph"
MODES = LOSS_MODES + OP_MODES + (CUDAGRAPH_MODE,)
TABLE_ORDER = ("train_step", CUDAGRAPH_MODE, "loss_forward", "loss_forward_backward") + OP_MODES

SIZES = {"cpu": (64, 256), "cuda": (100, 128, 1024, 8192)}
FAST_SIZES = {"cpu": (64,), "cuda": (100,)}
CUDAGRAPH_SIZES = (100,)
PRECISIONS = {
    "fp32": "float32 tensors, float32 matmuls (torch.backends.cuda.matmul.allow_tf32 = False)",
    "tf32": "float32 tensors, TF32 matmuls (torch.backends.cuda.matmul.allow_tf32 = True)",
    "bf16": "float32 parameters, the loss under torch.autocast(bfloat16); op inputs cast to bfloat16",
}
DEFAULT_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("tf32", "fp32", "bf16")}


def precision_unavailable_reason(provider: str, precision: str) -> str | None:
    """None when `provider` is benchmarked at `precision`, else why not (the skip reason)."""
    if provider == "pyro" and precision != "fp32":
        return ("Pyro is benchmarked in float32, as its users run TraceEnum_ELBO (its models and guides are "
                "not written for autocast)")
    return None
# rounds, warm-up calls, shortest round (calls are repeated until a round lasts this long), time cap
TIMING_DEFAULTS = {
    "cpu": {"rounds": 10, "warmup": 3, "min_round_s": 5e-3, "max_time_s": 20.0},
    "cuda": {"rounds": 30, "warmup": 10, "min_round_s": 1e-3, "max_time_s": 10.0},
}
FAST_TIMING = {"rounds": 3, "warmup": 1, "min_round_s": 1e-3, "max_time_s": 2.0}

BENCH_DIR = Path(__file__).resolve().parent.parent  # benchmarks/
REPO_ROOT = BENCH_DIR.parent
RUN_SCRIPT = BENCH_DIR / "run.py"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
