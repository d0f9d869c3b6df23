"""The test session's own guards (tests/conftest.py, .ci/run): a backend CI expects that cannot run stops the
session instead of skipping its tests and ending green.

Each case runs pytest in a subprocess on a small test module: with the CPU extension hidden from the import
system, tests/backends/test_cpu.py skips everything and passes, unless SSVAE_FAST_REQUIRE_BACKENDS names
`cpu`, when the session fails at once naming the backend and the reason; an unknown name fails too; and
without a GPU a TRITON_INTERPRET other than 1 fails the session (with it unset the tests set it to 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A sitecustomize that makes `import ssvae_fast._C` fail, as on a machine where the extension was not built.
_HIDE_EXTENSION = '''
import importlib.abc, sys

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssvae_fast._C":
            raise ImportError("hidden by the test: no compiled extension")
        return None

sys.meta_path.insert(0, _Hide())
'''


def _pytest(args, tmp_path=None, hide_extension=False, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("SSVAE_FAST_REQUIRE_BACKENDS", "PYTEST_ADDOPTS")}
    if hide_extension:
        (tmp_path / "sitecustomize.py").write_text(_HIDE_EXTENSION)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_missing_extension_skips_silently_unless_required(tmp_path):
    target = ["tests/backends/test_cpu.py"]
    silent = _pytest(target, tmp_path, hide_extension=True)
    assert silent.returncode == 0 and "skipped" in silent.stdout and "passed" not in silent.stdout, silent.stdout
    required = _pytest(target, tmp_path, hide_extension=True, SSVAE_FAST_REQUIRE_BACKENDS="reference,cpu")
    output = required.stdout + required.stderr
    assert required.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "requires backend 'cpu', which is not available here" in output and "ssvae_fast._C" in output, output
    assert "passed" not in output and "skipped" not in output


def test_required_backends_that_run_let_the_session_through():
    result = _pytest(["tests/test_rows.py"], SSVAE_FAST_REQUIRE_BACKENDS="reference, torch,cpu,triton")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_required_backend_fails():
    result = _pytest(["tests/test_rows.py", "--co"], SSVAE_FAST_REQUIRE_BACKENDS="cpu,fortran")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "names 'fortran', which is not a backend" in result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the environment's TRITON_INTERPRET is honoured")
def test_triton_interpret_other_than_one_without_gpu_fails():
    result = _pytest(["tests/test_rows.py", "--co"], TRITON_INTERPRET="0")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "TRITON_INTERPRET='0' on a machine without a CUDA GPU" in result.stdout + result.stderr
    unset = _pytest(["tests/backends/test_triton.py"], TRITON_INTERPRET=None)
    assert unset.returncode == 0 and "passed" in unset.stdout, unset.stdout + unset.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine may run the cuda backend")
def test_requiring_cuda_without_gpu_fails():
    result = _pytest(["tests/test_rows.py", "--co"], SSVAE_FAST_REQUIRE_BACKENDS="cuda")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "requires backend 'cuda'" in result.stdout + result.stderr


def test_ci_script_requires_the_cpu_backends():
    script = (REPO / ".ci" / "run").read_text()
    assert 'required=reference,torch,cpu,triton' in script
    assert 'export SSVAE_FAST_REQUIRE_BACKENDS=' in script
    assert script.index("SSVAE_FAST_REQUIRE_BACKENDS") < script.index("python3 -m pytest\n")
