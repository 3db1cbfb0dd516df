"""What every benchmark script in ``pipelines/`` reports the same way: the machine the numbers were measured on,
and the process's peak memory. Standard library only, so a script can import it before torch."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["machine_info", "maxrss_mib", "loadavg", "machine_line", "optional_packages_imported"]

# Packages MONAI imports at ``import monai`` whenever they are installed (its ``optional_import`` is eager; measured
# with MONAI 1.6: mlflow via monai.handlers, pandas via monai.utils.profiling, scikit-learn via
# monai.metrics.embedding_collapse, scipy and pyarrow with them): none is a dependency of monai_resunet (the
# ``mlflow`` extra brings them all), together they are about 200 MiB of resident set, so a process's floor depends
# on what else the environment has installed
OPTIONAL_HEAVY_PACKAGES: tuple[str, ...] = ("mlflow", "pandas", "sklearn", "scipy", "pyarrow")


def loadavg() -> str:
    """The 1/5/15-minute load average ("?" where the OS has none): other jobs on the machine slow every timing."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def optional_packages_imported() -> list[str]:
    """Which of ``OPTIONAL_HEAVY_PACKAGES`` this process has imported (so a report can say what its RSS floor holds)."""
    return [name for name in OPTIONAL_HEAVY_PACKAGES if name in sys.modules]


def maxrss_mib() -> float:
    """Peak resident set of this process so far, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _cpu_description() -> str:
    cpu = platform.processor() or platform.machine()
    extra = []
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]  # the first processor's block
        fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in first.splitlines() if ":" in ln)}
        cpu = fields.get("model name", cpu)
        flags = set(fields.get("flags", "").split())
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        if isa:
            extra.append("+".join(isa))
        if "hypervisor" in flags:
            extra.append("virtual machine")
    except OSError:
        pass
    return f"{cpu} ({', '.join(extra)})" if extra else cpu


def machine_info(threads: int | None = None, device: str = "cpu") -> dict[str, str]:
    """CPU (model, vector ISA), logical CPUs, RAM, torch threads, device, library versions, date and load."""
    try:
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        ram = f"{int(mem.split()[1]) / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        ram = "?"
    versions = {}
    for package in ("torch", "monai", "monai_resunet"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    info = {
        "cpu": _cpu_description(),
        "logical_cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "ram": ram,
        "threads": str(threads) if threads is not None else "?",
        "device": device,
        "python": platform.python_version(),
        **versions,
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load": loadavg(),
    }
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_line(info: dict[str, str]) -> str:
    """One Markdown line naming the machine, for a results file's header."""
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['ram']} RAM, {info['threads']} torch "
        f"threads, device {info['device']}{gpu}; Python {info['python']}, torch {info['torch']}, MONAI "
        f"{info['monai']}, monai_resunet {info['monai_resunet']}; {info['date']}; load average {info['load']}."
    )
