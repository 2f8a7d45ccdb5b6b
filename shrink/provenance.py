"""Where a result came from: library versions, threads, hardware and wall-clock times, for metrics.json.

A figure in metrics.json is only comparable with another when the two ran on the same software and
hardware; this records what is needed to tell. Usage: ``metrics["provenance"] = provenance(started_at)``.
"""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch

# The libraries a figure depends on (their distribution names); absent ones are left out.
LIBRARIES = ("shrink", "torch", "transformers", "accelerate", "onnx", "onnxruntime", "torch-pruning",
             "torch-geometric", "optuna", "scikit-learn", "numpy")


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second. Usage: ``started = utc_now()``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES`. Usage: ``library_versions()["torch"]``."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    """The machine: CPU, core counts, memory and accelerators. Usage: ``hardware()["cpu_count"]``."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "memory_gib": _memory_gib()}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def provenance(started_at: str, resumed: bool = False) -> dict[str, Any]:
    """The provenance block of metrics.json: versions, torch threads, hardware, start and end times.

    ``started_at`` is when this process opened the run (a resumed run started earlier, in another process).
    Usage: ``provenance(utc_now())``
    """
    return {"started_at": started_at, "finished_at": utc_now(), "resumed": resumed,
            "libraries": library_versions(), "torch_threads": torch.get_num_threads(), "hardware": hardware()}


def cpu_model() -> str:
    """The CPU's model name (e.g. for keying measurements that hold for one CPU only). Usage: ``cpu_model()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform's answer below
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None
