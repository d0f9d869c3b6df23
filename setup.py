"""Build script of ssvae_fast's compiled extension (project metadata lives in pyproject.toml).

CMake (CMakeLists.txt) builds two pybind11 modules into the ``ssvae_fast`` package:

* ``ssvae_fast._C``       C++/OpenMP CPU kernels; always built unless SSVAE_FAST_NO_EXT=1.
* ``ssvae_fast._C_cuda``  CUDA kernels; built when nvcc is found (see SSVAE_FAST_CUDA). The CUDA runtime
                          is linked statically, so the module never needs a libcudart.so.

Neither needs torch at build time (kernels take raw pointers), so installing never pulls in a torch
build of its own; the torch already installed is used at run time.

Environment switches:

    SSVAE_FAST_NO_EXT=1          pure-Python install: no compiler, CMake or nvcc needed. The `cpu` and
                                 `cuda` backends are then unavailable; `reference`, `torch` and `triton`
                                 work.
    SSVAE_FAST_CUDA=auto|1|0     auto (default): build _C_cuda when nvcc is found, and if that build fails
                                 warn and install the CPU module only; 1: build it or fail (error when
                                 nvcc is missing); 0: never build it.
    SSVAE_FAST_CUDA_ARCH=90      CUDA architectures, ';' or ',' separated (e.g. "80;90"). Each becomes
                                 SASS ("80-real"), and the highest also PTX ("90-virtual") so newer GPUs
                                 can JIT it. Entries with a -real/-virtual suffix, or "all",
                                 "all-major", "native", are passed to CMAKE_CUDA_ARCHITECTURES as given.
    CUDACXX / CUDA_HOME          where to find nvcc when it is not on PATH.
    SSVAE_FAST_BUILD_TYPE        CMake build type (default Release).
    CMAKE_BUILD_PARALLEL_LEVEL   parallel compile jobs (default: the number of CPUs).
    CMAKE_ARGS                   extra arguments for the CMake configure step (space separated).

Typical commands:

    pip install -e .                           # editable; the .so files land in ssvae_fast/
    pip install --no-build-isolation -e .      # reuse the installed setuptools/pybind11/cmake
    SSVAE_FAST_CUDA=0 pip install -e .         # CPU module only
    SSVAE_FAST_NO_EXT=1 pip install -e .       # pure Python
    python setup.py build_ext --inplace        # rebuild the modules in place (developers)
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # the exception types that make build_ext skip an optional extension with a warning
    from setuptools.errors import CompileError
except ImportError:  # pragma: no cover - very old setuptools
    from distutils.errors import CompileError

ROOT = Path(__file__).parent.resolve()

PURE_PYTHON_HINT = (
    "For a pure-Python install (no compiler, CMake or nvcc; the `cpu` and `cuda` backends are then "
    "unavailable) run:  SSVAE_FAST_NO_EXT=1 pip install -e .   (or `pip install .`)"
)
CUDA_OFF_HINT = "To skip only the CUDA module run:  SSVAE_FAST_CUDA=0 pip install -e ."

_TRUE = {"1", "on", "true", "yes", "force"}
_FALSE = {"0", "off", "false", "no", ""}


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"setup.py: {name}={os.environ[name]!r} is not understood; use 1 or 0")


def _cuda_mode() -> str:
    """'auto', 'on' or 'off', from SSVAE_FAST_CUDA."""
    value = os.environ.get("SSVAE_FAST_CUDA", "auto").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in _TRUE:
        return "on"
    if value in _FALSE:
        return "off"
    raise SystemExit(f"setup.py: SSVAE_FAST_CUDA={value!r} is not understood; use auto, 1 or 0")


def _find_nvcc():
    """Path of nvcc: $CUDACXX, then PATH, then $CUDA_HOME/bin, $CUDA_PATH/bin, /usr/local/cuda/bin."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _cuda_architectures(spec: str) -> str:
    """SSVAE_FAST_CUDA_ARCH ("90", "80;90", "8.0,9.0", "90-real") -> CMAKE_CUDA_ARCHITECTURES."""
    entries = [e.strip() for e in re.split(r"[;,\s]+", spec) if e.strip()]
    if not entries:
        raise SystemExit("setup.py: SSVAE_FAST_CUDA_ARCH is empty")
    if any(e in ("all", "all-major", "native") or e.endswith(("-real", "-virtual")) for e in entries):
        return ";".join(entries)
    numbers = []
    for entry in entries:
        number = entry.replace(".", "").replace("sm_", "").replace("compute_", "")
        if not re.fullmatch(r"\d+[af]?", number):
            raise SystemExit(f"setup.py: SSVAE_FAST_CUDA_ARCH entry {entry!r} is not an architecture")
        numbers.append(number)
    numbers = sorted(set(numbers), key=lambda n: int(re.match(r"\d+", n).group()))
    return ";".join([f"{n}-real" for n in numbers] + [f"{numbers[-1]}-virtual"])


def _cmake_args_from_env():
    try:
        return shlex.split(os.environ.get("CMAKE_ARGS", ""))
    except ValueError as exc:
        raise SystemExit(f"setup.py: CMAKE_ARGS={os.environ['CMAKE_ARGS']!r} cannot be split: {exc}")


def _relative_files(*patterns):
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


class CMakeExtension(Extension):
    """An extension module built by CMake target `target` (CMakeLists.txt), not by setuptools.

    `sources` and `depends` only tell sdist which files to ship; CMake picks what it compiles.
    """

    def __init__(self, name: str, target: str, sources, optional: bool = False) -> None:
        super().__init__(
            name,
            sources=sources,
            depends=_relative_files("CMakeLists.txt", "csrc/**/*.h", "csrc/**/*.cuh"),
            optional=optional,
        )
        self.target = target


class CMakeBuild(build_ext):
    """Configures CMakeLists.txt once per build directory, then builds each extension's CMake target.

    In SSVAE_FAST_CUDA=auto mode the CUDA module is an optional extension: when CMake cannot configure
    CUDA, or nvcc fails, the CPU module is still built and installed and build_ext prints a warning.
    """

    def run(self) -> None:
        cuda_ext = [e for e in self.extensions if e.name.endswith("_C_cuda")]
        self._with_cuda = bool(cuda_ext)
        self._cuda_optional = bool(cuda_ext) and cuda_ext[0].optional
        self._nvcc = _find_nvcc()
        self._cmake = None
        self._configured = None
        self._cuda_configured = False
        super().run()

    def build_extensions(self) -> None:
        # Serially, always: the extensions share one CMake build directory.
        self.check_extensions_list(self.extensions)
        self._build_extensions_serial()

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        # The directory the module must land in: build/lib.*/ssvae_fast for `pip install .`; the same
        # under a temporary build_lib for editable installs, from where setuptools copies the declared
        # modules into the source tree's ssvae_fast/ (build_ext.copy_extensions_to_source).
        output_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        build_dir = Path(self.build_temp).resolve() / "cmake"
        if self._configured is None:
            self._configure(output_dir, build_dir)
        elif self._configured != output_dir:
            raise CompileError(f"extension {ext.name} would land in {output_dir}, not {self._configured}")
        if ext.target == "_C_cuda" and not self._cuda_configured:
            raise CompileError("CMake could not configure CUDA (see the messages above)")
        build_type = os.environ.get("SSVAE_FAST_BUILD_TYPE", "Release")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        self._run(
            [self._cmake, "--build", str(build_dir), "--target", ext.target, "--config", build_type,
             "-j", jobs],
            f"build of {ext.name}",
            cuda=ext.target == "_C_cuda",
        )

    def _configure(self, output_dir: str, build_dir: Path) -> None:
        self._cmake = shutil.which("cmake")
        if self._cmake is None:
            raise CompileError(
                "ssvae_fast: CMake (>= 3.18) was not found. `pip install -e .` gets it as a build "
                "requirement; with --no-build-isolation install it first (pip install cmake).\n"
                + PURE_PYTHON_HINT
            )
        import pybind11  # a build requirement (pyproject.toml)

        build_type = os.environ.get("SSVAE_FAST_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output_dir}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_{build_type.upper()}={output_dir}",
        ] + _cmake_args_from_env()
        cuda_args = ["-DSSVAE_FAST_CUDA=OFF"]
        if self._with_cuda:
            arch = _cuda_architectures(os.environ.get("SSVAE_FAST_CUDA_ARCH", "90"))
            cuda_args = [
                "-DSSVAE_FAST_CUDA=ON",
                f"-DCMAKE_CUDA_COMPILER={self._nvcc}",
                f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
            ]
        try:
            self._cmake_configure(build_dir, args + cuda_args)
            self._cuda_configured = self._with_cuda
        except CompileError:
            if not (self._with_cuda and self._cuda_optional):
                raise
            print("setup.py: WARNING: configuring CUDA failed; building the CPU module only "
                  "(SSVAE_FAST_CUDA=0 silences this, SSVAE_FAST_CUDA=1 makes it an error)", flush=True)
            self._cmake_configure(build_dir, args + ["-DSSVAE_FAST_CUDA=OFF"])
        self._configured = output_dir

    def _cmake_configure(self, build_dir: Path, args) -> None:
        # A cache written by another cmake, python, pybind11 or set of options is thrown away: pip's
        # isolated build environments live in fresh temporary paths, and CMake refuses a cache that
        # names a different CMake or compiler.
        build_dir.mkdir(parents=True, exist_ok=True)
        stamp = build_dir / "ssvae_fast_configure_args.txt"
        fingerprint = "\n".join([self._cmake] + args)
        if not stamp.exists() or stamp.read_text() != fingerprint:
            shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
            (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
        self._run([self._cmake, "-S", str(ROOT), "-B", str(build_dir)] + args, "configure",
                  cuda="-DSSVAE_FAST_CUDA=ON" in args)
        stamp.write_text(fingerprint)

    def _run(self, cmd, what: str, cuda: bool = False) -> None:
        print("setup.py:", " ".join(shlex.quote(c) for c in cmd), flush=True)
        try:
            subprocess.run(cmd, cwd=ROOT, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            hints = ([CUDA_OFF_HINT] if cuda else []) + [PURE_PYTHON_HINT]
            raise CompileError(
                f"ssvae_fast: CMake {what} failed ({exc}); the compiler output is above.\n" + "\n".join(hints)
            ) from exc


def _extensions():
    if _env_flag("SSVAE_FAST_NO_EXT"):
        print("setup.py: SSVAE_FAST_NO_EXT=1, installing pure Python (no ssvae_fast._C / _C_cuda)")
        return []
    modules = [CMakeExtension("ssvae_fast._C", "_C", _relative_files("csrc/bindings.cpp", "csrc/cpu/*.cpp"))]
    mode = _cuda_mode()
    nvcc = _find_nvcc()
    if mode == "on" and nvcc is None:
        raise SystemExit(
            "setup.py: SSVAE_FAST_CUDA=1 but nvcc was not found (looked at $CUDACXX, PATH, $CUDA_HOME/bin, "
            f"/usr/local/cuda/bin).\n{CUDA_OFF_HINT}\n{PURE_PYTHON_HINT}"
        )
    if mode == "on" or (mode == "auto" and nvcc is not None):
        # In auto mode a failed CUDA build only warns (build_ext skips optional extensions).
        sources = _relative_files("csrc/bindings_cuda.cpp", "csrc/cuda/*.cu")
        modules.append(CMakeExtension("ssvae_fast._C_cuda", "_C_cuda", sources, optional=(mode == "auto")))
        print(f"setup.py: building ssvae_fast._C_cuda with {nvcc} (SSVAE_FAST_CUDA={mode})")
    else:
        why = "SSVAE_FAST_CUDA=0" if mode == "off" else "nvcc not found"
        print(f"setup.py: not building ssvae_fast._C_cuda ({why})")
    return modules


def _remove_in_place_modules() -> None:
    """Editable installs: delete the modules a previous build left in ssvae_fast/ before building.

    Otherwise SSVAE_FAST_NO_EXT=1 or SSVAE_FAST_CUDA=0 (or a failed optional CUDA build) would leave a
    stale, importable _C / _C_cuda behind. Unlinking, rather than copying over the old file, also keeps
    processes that have the old module loaded from crashing.
    """
    for path in sorted((ROOT / "ssvae_fast").glob("_C*")):
        if path.suffix in (".so", ".pyd") and path.name.split(".")[0] in ("_C", "_C_cuda"):
            print(f"setup.py: removing the previous build's {path.relative_to(ROOT)}")
            path.unlink()


_IN_PLACE = "editable_wheel" in sys.argv or "develop" in sys.argv or (
    "build_ext" in sys.argv and ("--inplace" in sys.argv or "-i" in sys.argv)
)
if _IN_PLACE:
    _remove_in_place_modules()

setup(ext_modules=_extensions(), cmdclass={"build_ext": CMakeBuild})
