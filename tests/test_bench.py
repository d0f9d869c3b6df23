"""The benchmark machinery: FLOP count, input factory, memory method, report runner, tables, Pyro M2.

No speed is asserted anywhere; these tests check that the figures mean what benchmarks/README.md says.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ssvae_fast import M2, backends, objective
from ssvae_fast.flops import step_flops

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO_ROOT / "benchmarks"  # on sys.path, as for benchmarks/run.py and the suite: `harness`
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from harness import cases, cli, config, grid, measure, op_cases, report  # noqa: E402


def _counted_flops(provider: str, B: int) -> tuple[int, int, cases.Case]:
    """(forward, forward + backward) matmul FLOPs torch's FLOP counter sees in `provider`'s loss."""
    case = cases.make_case(B, n_batches=1)
    runner = cases.LossRunner(provider, case)
    with FlopCounterMode(display=False) as forward:
        runner.forward(case.batches[0])
    with FlopCounterMode(display=False) as both:
        runner.forward_backward(case.batches[0])
    return forward.get_total_flops(), both.get_total_flops(), case


def _step_flops(case: cases.Case, formulation: str, backward: bool) -> int:
    s = config.MODEL_SHAPES
    return step_flops(case.B, case.n_l, s["n_classes"], s["x_dim"], s["hidden"], s["z_dim"], formulation,
                      backward=backward)


@pytest.mark.parametrize("B", [1, 8, 33])
def test_naive_step_flops_is_what_the_reference_runs(B):
    forward, both, case = _counted_flops("reference", B)
    assert forward == _step_flops(case, "naive", backward=False)
    assert both == _step_flops(case, "naive", backward=True)


@pytest.mark.parametrize("B", [1, 8, 33])
def test_factorized_step_flops_is_the_torch_backends_useful_work(B):
    """The torch backend runs the factorized products plus small extras (one-hot class columns, 0.6%):
    the count is a lower bound within 1%. The naive formulation would be 38% more at these sizes."""
    forward, both, case = _counted_flops("torch", B)
    for counted, backward in ((forward, False), (both, True)):
        useful = _step_flops(case, "factorized", backward=backward)
        assert useful <= counted <= 1.01 * useful


def test_step_flops_docstring_figures():
    f = step_flops(256, 26, 10, 784, 500, 50)
    assert f == 7_729_356_000
    assert step_flops(256, 26, 10, 784, 500, 50, backward=False) == 2_777_156_000
    assert round(step_flops(256, 26, 10, 784, 500, 50, "naive") / f, 2) == 1.38
    with pytest.raises(ValueError):
        step_flops(4, 5, 10, 784, 500, 50)


def test_make_case_mix_shapes_and_rotation():
    assert cases.split_batch(256) == (26, 230)
    assert cases.split_batch(64) == (6, 58)
    assert cases.split_batch(100) == (10, 90)
    case = cases.make_case(256, n_batches=3, seed=5)
    assert (case.n_l, case.n_u, len(case.batches)) == (26, 230, 3)
    b = case.batches[0]
    assert b.x_l.shape == (26, 784) and b.x_u.shape == (230, 784) and b.y_l.shape == (26,)
    assert b.eps_l.shape == (26, 50) and b.eps_u.shape == (230, 10, 50)
    assert set(torch.unique(b.x_u).tolist()) <= {0.0, 1.0}
    assert not torch.equal(case.batches[0].x_u, case.batches[1].x_u)  # batches rotate
    again = cases.make_case(256, n_batches=3, seed=5)
    assert torch.equal(again.batches[2].eps_u, case.batches[2].eps_u)
    assert all(torch.equal(p, q) for p, q in zip(again.model.parameters(), case.model.parameters()))


def test_unavailable_providers_say_why():
    assert cases.provider_unavailable_reason("reference", "cpu") is None
    assert "GPUs only" in cases.provider_unavailable_reason("reference-compile-max-autotune", "cpu")
    if not torch.cuda.is_available():
        assert cases.provider_unavailable_reason("cuda", "cpu")
    with pytest.raises(ValueError):
        cases.provider_unavailable_reason("nope", "cpu")


def test_pyro_is_benchmarked_in_float32_only():
    """The CPU grid's bf16 rows cover every provider but Pyro, which is skipped there with its reason."""
    from harness import grid
    from harness.config import DEFAULT_PRECISIONS, precision_unavailable_reason

    assert DEFAULT_PRECISIONS["cpu"] == ("fp32", "bf16")
    assert precision_unavailable_reason("cpu", "bf16") is None and precision_unavailable_reason("pyro", "fp32") is None
    specs, skipped = grid.grid_specs("cpu", [8], ["pyro", "cpu"], ["fp32", "bf16"], ["train_step"], [])
    runnable = {s["provider"]: s["precisions"] for s in specs}
    assert runnable.get("cpu") == ["fp32", "bf16"]
    pyro_skips = [r for r in skipped if r["provider"] == "pyro" and r["precision"] == "bf16"]
    assert len(pyro_skips) == 1 and "float32" in pyro_skips[0]["reason"]
    assert not [r for r in skipped if r["provider"] == "pyro" and r["precision"] == "fp32"
                and "float32" in (r["reason"] or "")]


@pytest.mark.skipif(measure.cpu_peak_memory_supported() is not None, reason="needs Linux and glibc")
def test_cpu_peak_memory_sees_a_known_allocation():
    """A call that fills 32 MiB, frees it, then fills 64 MiB reads as a 64 MiB peak, not 96 and not
    counting what was resident before (a subprocess: the method changes malloc settings for good)."""
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        sys.path.insert(0, {str(BENCHMARKS)!r})
        from harness import measure
        def fn(_):
            b = torch.ones(8 * 2**20)           # 32 MiB, written, freed before the peak
            del b
            a = torch.ones(16 * 2**20)          # 64 MiB, written
            return float(a[0])
        big = torch.ones(32 * 2**20)            # resident before the call: not counted
        print(measure.measure_peak_memory(fn, None, "cpu") / 2**20)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert 64 * 0.97 <= peak_mb <= 64 * 1.05, peak_mb  # RSS counters are batched per thread: ~0.5 MB


def test_report_runner_json_schema_table_and_readme(tmp_path):
    out = tmp_path / "cpu-test.json"
    rc = cli.main([
        "run", "--device", "cpu", "--sizes", "8", "--providers", "reference,torch,cuda", "--rounds", "2",
        "--warmup", "1", "--ops", "bernoulli_loglik_linear,elbo_reduction", "--precisions", "fp32", "--out", str(out),
    ])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == config.SCHEMA and doc["device"] == "cpu"
    for key in ("date", "created", "hardware", "versions", "settings", "ceilings", "results"):
        assert key in doc
    assert doc["hardware"]["cpu_model"] and doc["hardware"]["cpu_logical_cores"] >= 1
    for key in ("python", "torch", "triton", "ssvae_fast", "git_commit"):
        assert key in doc["versions"]
    settings = doc["settings"]
    assert settings["mix"]["per_size"] == {"8": [1, 7]} and settings["precisions"].keys() == {"fp32"}
    assert settings["memory_method"] and settings["flop_count"]
    assert sorted((c["provider"], c["B"], c["precision"]) for c in doc["ceilings"]) == [
        ("reference", 8, "fp32"), ("torch", 8, "fp32")]  # one per worker process
    assert all(c["tflops"] > 0 and c["shape"] == [80, 500, 784] for c in doc["ceilings"])

    by_key = {(r["mode"], r["provider"], r["op"]): r for r in doc["results"]}
    for provider in ("reference", "torch"):
        for mode in config.LOSS_MODES:
            r = by_key[(mode, provider, None)]
            assert r["status"] == "ok", r
            assert r["median_ms"] > 0 and r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["rounds"] == 2
            assert r["examples_per_s"] == pytest.approx(8 / (r["median_ms"] * 1e-3))
            assert r["flops"] == step_flops(8, 1, 10, 784, 500, 50, backward=mode != "loss_forward")
            assert r["ceiling_fraction"] == pytest.approx(r["tflops"] / r["ceiling_tflops"])
            if settings["memory_unavailable"] is None:
                assert r["peak_mb"] > 0
    op = by_key[("op_forward_backward", "torch", "bernoulli_loglik_linear")]
    assert op["status"] == "ok" and op["flops"] > 0 and op["gb_per_s"] > 0
    assert by_key[("op_forward", "torch", "elbo_reduction")]["flops"] is None
    assert ("op_forward", "reference", "elbo_reduction") not in by_key  # ops: backends only
    skipped = by_key[("train_step", "cuda", None)]
    if not torch.cuda.is_available():
        assert skipped["status"] == "skipped" and skipped["reason"]

    table = report.render_documents([out])
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| provider"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(report.TABLE_COLUMNS)
    rows = [line for line in lines if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`reference`", "`torch`"]
    assert "| `reference` | 8 | fp32 |" in rows[0] and "1.00x" in rows[0]
    assert doc["hardware"]["cpu_model"] in table and doc["date"] in table
    if not torch.cuda.is_available():
        assert "- `cuda` skipped (B=8)" in table
    assert "`bernoulli_loglik_linear`" in report.render_documents([out], all_modes=True)

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{config.BENCH_START}\nold table\n{config.BENCH_END}\n\nafter\n")
    assert cli.main(["table", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + config.BENCH_START)
    assert text.endswith(config.BENCH_END + "\n\nafter\n")
    assert "old table" not in text and header in text
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("nothing to rewrite\n")
    with pytest.raises(SystemExit):
        cli.main(["table", str(out), "--readme", str(no_markers)])
    assert no_markers.read_text() == "nothing to rewrite\n"


def test_op_benches_take_the_arguments_the_objective_passes():
    """Each op variant gets the arguments recorded from its call inside the objective: the encoder's
    class-conditional call (x once per example, the labels), the decoder's (a class per row), and the
    ELBO reduction's, which give the objective's per-example losses back."""
    case = cases.make_case(8, n_batches=1)
    b = case.batches[0]
    rows = case.n_l + case.n_u * config.MODEL_SHAPES["n_classes"]
    enc, diff = op_cases.op_inputs(case, "class_conditional_activation[encoder]", b)
    assert diff == (0, 1) and enc[0].shape[0] == case.B and torch.equal(enc[2], b.y_l)
    dec, _ = op_cases.op_inputs(case, "class_conditional_activation[decoder]", b)
    assert dec[0].shape[0] == rows and dec[2].shape == (rows,) and torch.equal(dec[2][: case.n_l], b.y_l)
    head, diff = op_cases.op_inputs(case, "gaussian_reparam_kl", b)
    assert diff == (0,) and head[0].shape[0] == rows
    bern, diff = op_cases.op_inputs(case, "bernoulli_loglik_linear", b)
    assert diff == (0, 1, 2) and bern[4] == case.n_l
    assert not any(isinstance(a, torch.nn.Parameter) or getattr(a, "requires_grad", False) for a in bern)
    args, diff = op_cases.op_inputs(case, "elbo_reduction", b)
    assert diff == (0, 2, 3, 4, 5) and args[-1] == case.alpha
    ops = backends.get_ops("torch")
    with torch.no_grad():
        losses = objective.per_example_losses(ops, case.model.objective_weights(), b.x_l, b.y_l, b.x_u, b.eps_l,
                                              b.eps_u, case.alpha)
        torch.testing.assert_close(ops.elbo_reduction(*args), losses, rtol=0, atol=0)
    fb = op_cases.build_op_bench("bernoulli_loglik_linear", "torch", case, "fp32", "op_forward_backward")
    grads = fb.fn(fb.inputs[0])
    assert len(grads) == 3 and [g.shape for g in grads] == [a.shape for a in fb.inputs[0][1]]


def test_run_script_works_from_any_directory(tmp_path):
    """`python benchmarks/run.py table ...` from another directory renders the committed results."""
    results = REPO_ROOT / "benchmarks" / "results" / "cpu-2026-11-21.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "table", str(results)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("### Training step (loss, backward, Adam):")
    assert "| `cpu` | 256 | fp32 |" in proc.stdout


def test_grid_runs_fused_backends_first_and_checkpoints_partial_documents():
    docs = []
    final = grid.run_grid("cpu", sizes=(8,), providers=("reference", "torch"), modes=("train_step",), rounds=1,
                           warmup=1, in_process=True, checkpoint=docs.append, log=lambda line: None)
    assert len(docs) == 1  # after the first of two workers; the last one's document is the return value
    partial = docs[0]
    assert partial["complete"] is False and partial["workers"] == {"done": 1, "total": 2}
    assert {r["provider"] for r in partial["results"]} == {"torch"}  # RUN_ORDER: torch before reference
    assert "partial run: 1 of 2 (provider, B) workers finished" in report.render_tables(partial)
    assert final["complete"] is True and final["workers"] == {"done": 2, "total": 2}
    assert {r["provider"] for r in final["results"]} == {"torch", "reference"}
    assert "partial run" not in report.render_tables(final)
    assert sorted(config.RUN_ORDER) == sorted(config.PROVIDERS)


def test_a_worker_past_its_time_limit_is_recorded_as_an_error():
    spec = {"provider": "torch", "B": 8, "device": "cpu", "precisions": ["fp32"], "modes": ["train_step"],
            "ops": [], "timing": config.FAST_TIMING, "memory": False}
    out = grid._run_spec_in_subprocess(spec, timeout_s=0.01)
    assert out["ceilings"] == [] and len(out["records"]) == 1
    record = out["records"][0]
    assert record["status"] == "error" and "ran past" in record["reason"] and record["provider"] == "torch"
    with pytest.raises(SystemExit):
        cli.main(["run", "--device", "cpu", "--worker-timeout", "0"])


def test_pyro_m2_matches_the_m2_objective_in_expectation():
    """Pyro's enumerated ELBO + classification loss is M2's loss up to Monte Carlo noise (Pyro estimates
    the KL by sampling): the means of 300 draws of each agree within 5 standard errors."""
    pytest.importorskip("pyro")
    import pyro

    from pyro_m2 import PyroM2
    torch.manual_seed(0)
    model = M2(12, 3, 2, hidden=(8,), backend="reference").double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x_l = (torch.rand(2, 12, generator=g) < 0.3).double()
    x_u = (torch.rand(3, 12, generator=g) < 0.3).double()
    y_l = torch.tensor([0, 2])
    pyro_m2 = PyroM2(model, alpha=2.0)
    n = 300
    with torch.no_grad():
        ours = torch.stack([model.loss(x_l, y_l, x_u, alpha=2.0, generator=g) for _ in range(n)])
    pyro.set_rng_seed(2)  # (Pyro's differentiable_loss refuses to run under no_grad)
    theirs = torch.stack([pyro_m2.loss(x_l, y_l, x_u).detach() for _ in range(n)])
    stderr = math.sqrt(ours.var().item() / n + theirs.var().item() / n)
    assert abs(ours.mean().item() - theirs.mean().item()) < 5 * stderr
    pyro_m2.loss(x_l, y_l, x_u).backward()  # gradients reach every network
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_profile_cpu_step_runs_every_mode(capsys):
    """benchmarks/profile_cpu_step.py (the cpu backend's iteration tool) still drives the ops it names:
    one round of the step providers (float32 and bf16), its options, the Bernoulli op's variants and the
    weight-gradient layouts."""
    from ssvae_fast import _ext

    if not _ext.HAS_EXT:
        pytest.skip(f"the compiled extension is not built ({_ext.EXT_IMPORT_ERROR})")
    import importlib.util

    spec = importlib.util.spec_from_file_location("profile_cpu_step", REPO_ROOT / "benchmarks" / "profile_cpu_step.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    providers = "cpu,cpu:recompute,cpu:store-chunk=256,gemm"
    assert tool.main(["--providers", providers, "--rounds", "1", "--warmup", "1"]) == 0
    assert "cpu / gemm" in capsys.readouterr().out
    assert tool.main(["--ops", "--rounds", "1"]) == 0
    assert "fwd + bwd custom ops, no autograd" in capsys.readouterr().out
    assert tool.main(["--precision", "bf16", "--providers", "cpu,gemm", "--rounds", "1", "--warmup", "1"]) == 0
    assert "bf16, B=256" in capsys.readouterr().out
    assert tool.main(["--precision", "bf16", "--layouts", "--rounds", "1"]) == 0
    assert "(XT dY)^T, XT made beforehand" in capsys.readouterr().out


def test_conv_classifier_benchmark_runs(tmp_path, capsys):
    """benchmarks/conv_classifier.py times both forms of the classifier and writes its JSON."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("conv_classifier", REPO_ROOT / "benchmarks" / "conv_classifier.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "conv.json"
    assert tool.main(["--batch", "4", "--rounds", "1", "--warmup", "1", "--json", str(out)]) == 0
    assert "training: textbook / forward" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert set(doc["ratio_of_medians"]) == {"training", "evaluation"} and len(doc["median_ms"]) == 4
    with pytest.raises(SystemExit):
        tool.main(["--rounds", "0"])


def test_gpu_session_script_runs_its_stages_in_order(tmp_path):
    """benchmarks/gpu_session.sh wiring, with python3 and nvidia-smi replaced by recorders (no GPU needed)."""
    import os
    import subprocess

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls.txt"
    for name in ("python3", "nvidia-smi"):
        script = fake_bin / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n[ "$1" = "-c" ] && exit 1\nexit 0\n')
        script.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", SSVAE_FAST_WORKER_TIMEOUT="77")
    out = tmp_path / "out"
    script = REPO_ROOT / "benchmarks" / "gpu_session.sh"
    proc = subprocess.run(["bash", str(script), "--out", str(out), "tests", "bench-tf32", "bench-fp32"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in calls.read_text().splitlines() if not line.startswith(("nvidia-smi", "python3 -c"))]
    assert lines[0] == "python3 -m pytest tests -q -rs"  # no xdist (the fake python3 cannot import it)
    assert lines[1].startswith("python3 benchmarks/run.py --device cuda --worker-timeout 77 --precisions tf32 "
                               f"--out {out}/cuda-tf32-")
    assert lines[2].startswith("python3 benchmarks/run.py --device cuda --worker-timeout 77 --precisions fp32 "
                               "--providers reference,torch,triton,cuda --out")
    assert len(lines) == 3 and (out / "tests.log").exists() and (out / "bench-fp32.log").exists()
    bad = subprocess.run(["bash", str(script), "bench-everything"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_triton_registers_reports_compiled_kernels(tmp_path):
    """benchmarks/triton_registers.py compiles kernels for sm_90 through the launchers, without a GPU, and
    reads registers and spills from ptxas."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia.compiler", reason="needs Triton's NVIDIA backend (ptxas)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "regs.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "triton_registers.py"),
                           "--kernels", "elbo", "--dtypes", "fp32,bf16", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert doc["arch"] == 90 and {(r["kernel"], r["dtype"]) for r in rows} == {
        (k, d) for k in ("_elbo_reduction_fwd_kernel", "_elbo_reduction_bwd_kernel") for d in ("fp32", "bf16")}
    assert all(0 < r["registers"] <= 255 for r in rows)
    # The ELBO kernels hold a row's classes in registers: no spill at C = 10 (a spill here is a regression).
    assert [(r["spill_stores"], r["spill_loads"]) for r in rows] == [(0, 0)] * len(rows)
    assert "4 compiled kernels, 0 with spills" in proc.stdout
    assert all(r["constexprs"]["BLOCK_C"] == 16 for r in rows)  # next power of two >= C = 10, as launched
    assert "4 compiled kernels" in proc.stdout and "`_elbo_reduction_fwd_kernel` | fp32 |" in proc.stdout
    interpreted = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "triton_registers.py")],
                                 env=dict(env, TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=600)
    assert interpreted.returncode != 0 and "unset TRITON_INTERPRET" in interpreted.stderr


def test_m1_features_reports_active_dimensions_and_nearest_neighbours(tmp_path, capsys):
    """benchmarks/m1_features.py trains M1 as M1+M2's first stage would and scores k-NN on its mean features
    beside the pixels, on validation only."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("m1_features", REPO_ROOT / "benchmarks" / "m1_features.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "f.json"
    assert tool.main(["--dataset", "digits", "--seed", "3", "--m1-steps", "20", "--m1-z-dim", "4",
                      "--m1-warmup", "10", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["m1_z_dim"] == 4 and doc["m1_warmup"] == 10 and 0 <= doc["active_dims"] <= 4
    assert len(doc["mean_std_sorted"]) == 4 and doc["knn_val_accuracy"].keys() == {"1", "3", "5"}
    assert all(0.0 <= v <= 1.0 for row in doc["knn_val_accuracy"].values() for v in row.values())
    assert "1-NN on 100 labels" in capsys.readouterr().out
    x = torch.tensor([[0.0], [1.0], [10.0]])
    assert tool.knn_accuracy(x, torch.tensor([0, 1, 1]), torch.tensor([[0.2], [9.0]]), torch.tensor([0, 1]), 1, 2) == 1.0


def test_bf16_comparison_table_is_computed_from_the_documents(tmp_path, capsys):
    """`run.py table --bf16`: one column per document; the ratios and the GEMM floor (the bf16 step's
    FLOPs at the bf16 ceiling of the same worker) recomputed by hand from two synthetic documents."""

    def doc(f32, b16, ref, c32, c16, flops=4e9):
        step = lambda provider, precision, ms: dict(  # noqa: E731
            mode="train_step", provider=provider, precision=precision, B=256, status="ok", median_ms=ms,
            flops=flops)
        return {"results": [step("cpu", "fp32", f32), step("cpu", "bf16", b16), step("reference", "bf16", ref),
                            dict(step("cpu", "fp32", 1.0), B=64)],
                "ceilings": [dict(provider="cpu", precision="fp32", B=256, tflops=c32),
                             dict(provider="cpu", precision="bf16", B=256, tflops=c16),
                             dict(provider="reference", precision="bf16", B=256, tflops=99.0)]}

    paths = []
    for name, d in (("run-a", doc(60.0, 20.0, 50.0, 0.2, 1.0)), ("run-b", doc(45.0, 18.0, 27.0, 0.1, 0.5))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(d))
    assert cli.main(["table", "--bf16", *map(str, paths)]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert rows["training step, B = 256"] == ["run-a", "run-b"]
    assert rows["`cpu`, float32"] == ["60.0 ms", "45.0 ms"] and rows["`cpu`, bf16 (autocast)"] == ["20.0 ms", "18.0 ms"]
    assert rows["bf16 speed-up of `cpu`"] == ["3.00x", "2.50x"]
    assert rows["`cpu` against `reference`, both bf16"] == ["2.50x", "1.50x"]
    assert rows["the step's GEMMs at that bf16 ceiling (the floor)"] == ["4.0 ms", "8.0 ms"]  # 4 GFLOP at 1 / 0.5
    assert rows["`cpu` bf16 step over that floor"] == ["5.00x", "2.25x"]
    assert rows["matmul ceiling, bf16 (TFLOP/s)"] == ["1.00", "0.50"]
