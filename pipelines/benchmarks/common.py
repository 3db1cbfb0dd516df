"""What every benchmark reports and does the same way: the machine the numbers were measured on, peak memory, the
network's share of a call's time, Markdown tables, atomic result files, and one measured case per fresh process
(``python -m pipelines.benchmarks.NAME ...`` re-invoked). Standard library only, so a script can import it before
torch."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "RESULTS",
    "TimedNetwork",
    "child_error",
    "loadavg",
    "machine_info",
    "machine_line",
    "markdown_table",
    "maxrss_mib",
    "module_command",
    "optional_packages_imported",
    "run_module",
    "write_json",
]

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # summaries kept in git; run folders below it are ignored

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


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs benchmark ``module`` (``colin27``, ``speed``...) in a fresh interpreter."""
    return [sys.executable, "-m", f"pipelines.benchmarks.{module}", *args]


def run_module(cmd: Sequence[str], timeout: float | None = None, capture: bool = True) -> str | None:
    """Run ``cmd`` (from :func:`module_command`) with the repository importable whatever the working directory;
    return ``None`` on success or why it failed (exit status and last stderr line, signal, timeout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(list(cmd), capture_output=capture, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g} s"
    return child_error(proc.returncode, proc.stderr if capture else "")


def child_error(returncode: int, stderr: str = "") -> str | None:
    """A child's exit status in words: ``None`` for 0, the signal that killed it, or the last line it printed."""
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" + (" (out of memory?)" if returncode == -signal.SIGKILL else "")
    return f"exit {returncode}: {((stderr or '').strip().splitlines() or ['?'])[-1][:200]}"


def write_json(path: str | os.PathLike, data: Any, indent: int | None = None) -> None:
    """Write ``data`` as JSON atomically (a reader, or a run resumed after a kill, never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))
    os.replace(tmp, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Callable[[Any], str] = str) -> list[str]:
    """A Markdown table (first column left-aligned, the others right-aligned), cells through ``fmt``, ``|`` escaped.

    Example: ``markdown_table(["net", "s"], [["resunet", 1.5]])`` gives the header, the rule and one row.
    """
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    return lines + ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]


class TimedNetwork:
    """Wraps a network: adds up the wall and CPU seconds of its calls and the windows it saw, so that an inferer's
    own time (stitching, pipeline overhead) is the total minus :attr:`seconds`."""

    def __init__(self, network: Any) -> None:
        self.network = network
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.windows = 0
        self.calls = 0

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = self.network(x, *args, **kwargs)
        self.seconds += time.perf_counter() - w0
        self.cpu_seconds += time.process_time() - c0
        self.windows += int(x.shape[0])
        self.calls += 1
        return out
