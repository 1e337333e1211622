"""Where a number was measured: what ``summary.json`` records beside the results, because the
same seed reproduces the same numbers only on the same software, CPU kind and thread count
(torch sums floats in an order that depends on the CPU's vector unit and its threads)."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The CPU feature flags that decide which kernels torch and numpy run (x86 and ARM names).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "asimd", "sve", "sve2")


def _version_of(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the git checkout fedsim runs from (``+dirty`` when tracked files changed),
    or None outside one (an installed wheel) or when git is missing or slow."""
    where = where or Path(__file__).resolve().parent.parent
    if not (where / ".git").exists():
        return None
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(where), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (/proc/cpuinfo's "model name", else platform's processor name)."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def vector_flags(cpuinfo: str | None = None) -> list[str]:
    """The ``VECTOR_FLAGS`` the CPU has (x86 "flags", ARM "Features" of /proc/cpuinfo)."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [f for f in VECTOR_FLAGS if f in flags]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def _static() -> dict:
    import torch

    return {
        "fedsim": _version_of("fedsim"), "commit": git_commit(),
        "python": platform.python_version(), "torch": torch.__version__, "flwr": _version_of("flwr"),
        "open_clip": _version_of("open_clip_torch"), "numpy": _version_of("numpy"),
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_flags": vector_flags(),
        # the kernels torch chose for this CPU (e.g. AVX2, AVX512): what decides its sums
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
    }


def provenance(*, engine: str, client_threads: int, server_threads: int | None = None) -> dict:
    """What produced a run: software versions and commit, the CPU and its vector flags, the
    threads used, the engine: "inprocess", "ray" (fedsim run), "flwr" (the ServerApp under a Flower runtime:
    `flwr run`, `fedsim deploy`), "deployment" (fedsim deploy when the ServerApp wrote nothing)."""
    import torch

    return {**_static(), "engine": engine, "client_threads": client_threads,
            "server_threads": server_threads if server_threads is not None else torch.get_num_threads()}
