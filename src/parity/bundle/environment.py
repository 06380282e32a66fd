"""``env.json``: facts about the machine, each read on purpose from an allowlist."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from typing import Any

from .._version import __version__

__all__ = ["collect_environment", "PACKAGES", "ENV_SETTINGS"]

#: Python distributions whose versions env.json records (read from metadata; nothing is imported).
PACKAGES = ("parity", "numpy", "safetensors", "rich", "click", "ml_dtypes", "torch", "transformers", "tokenizers",
            "onnx", "onnxruntime", "jax", "jaxlib", "scipy", "jinja2", "jsonschema")

#: The only environment variables env.json reads, each by name: settings that change numerics or
#: which device runs. Nothing else from the environment is ever recorded.
ENV_SETTINGS = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git(cwd: str) -> dict[str, Any] | None:
    def run(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True,
                               timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout if p.returncode == 0 else None

    sha = run("rev-parse", "HEAD")
    if sha is None:
        return None
    status = run("status", "--porcelain")
    # Only whether the tree is dirty is recorded, never the file names git lists.
    return {"sha": sha.strip(), "dirty": None if status is None else bool(status.strip())}


def _torch_facts() -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"installed": False}
    try:
        import torch
    except Exception as e:  # a broken install is a fact worth recording, not a crash
        return {"installed": True, "import_error": type(e).__name__}
    facts: dict[str, Any] = {"installed": True, "version": str(torch.__version__),
                             "default_dtype": str(torch.get_default_dtype()).replace("torch.", ""),
                             "cuda_available": bool(torch.cuda.is_available()),
                             "cuda_version": torch.version.cuda, "devices": ["cpu"]}
    if facts["cuda_available"]:
        facts["cudnn_version"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            facts["devices"].append(f"cuda:{i} {torch.cuda.get_device_name(i)}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        facts["devices"].append("mps")
    return facts


def collect_environment(*, cwd: str | None = None, device: str | None = None, dtype: str | None = None,
                        probe_torch: bool = True) -> dict[str, Any]:
    """Facts about this machine for ``env.json``, each read on purpose from an allowlist.

    Recorded: parity, Python and package versions; torch and CUDA availability and devices;
    the declared run device and dtype; platform, CPU model and count, memory; the git commit of
    ``cwd`` and whether its tree is dirty; and the few numerics settings in :data:`ENV_SETTINGS`.
    Never recorded: any other environment variable, the host name, the user name, file lists.

    Args:
        cwd: the directory whose git commit is recorded (default: the current directory).
        device, dtype: what the run declares it uses, e.g. ``"cuda:0"``, ``"bf16"``.
        probe_torch: import torch (when installed) to ask about CUDA; costs about a second.

    Returns:
        A JSON-serialisable dict.

    Example:
        >>> env = collect_environment(probe_torch=False)
        >>> sorted(env)[:4], env["python"]["version"] == platform.python_version()
        (['cpu', 'git', 'memory_bytes', 'packages'], True)
    """
    return {
        "parity": __version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "packages": _package_versions(),
        "torch": _torch_facts() if probe_torch else {"probed": False},
        "run": {"device": device, "dtype": dtype},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "platform": platform.platform()},
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "memory_bytes": _memory_bytes(),
        "git": _git(cwd or os.getcwd()),
        "settings": {name: os.environ.get(name) for name in ENV_SETTINGS},
    }

