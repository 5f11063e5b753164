"""Where a number came from: code version, libraries, machine, device and timing of a run."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

import vae_zoo

REPO = Path(vae_zoo.__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "numpy", "pandas", "wandb", "torchmetrics", "submitit")


@cache
def code_version() -> dict:
    """The git commit of the code and whether the tree had uncommitted changes, else the
    package version alone."""
    version = {"package_version": vae_zoo.__version__, "git_commit": None, "git_dirty": None}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                  text=True, check=True, timeout=10).stdout.strip()

        version["git_commit"] = git("rev-parse", "HEAD")
        # Results and reports are outputs, not code: they do not make the tree dirty.
        changes = git("status", "--porcelain", "--", ".", ":!results", ":!reports")
        version["git_dirty"] = bool(changes)
    except (OSError, subprocess.SubprocessError):
        pass
    commit = version["git_commit"]
    if commit:
        version["code_version"] = commit[:12] + ("-dirty" if version["git_dirty"] else "")
    else:
        version["code_version"] = f"vae-zoo {vae_zoo.__version__}"
    return version


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine(device: str) -> dict:
    """Static facts about this process's machine and device."""
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    return {
        **code_version(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "libraries": library_versions(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
