"""Parameters, seeding and the process settings every stage shares."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read the pipeline's params file."""
    with open(path) as f:
        return yaml.safe_load(f)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Deterministic kernels cost speed on GPU and change nothing measurable on CPU,
    # so they are an explicit choice rather than always on.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def tune_malloc() -> bool:
    """Keep glibc from returning big activation buffers to the kernel after every batch.

    With glibc's defaults, a CNN forward pass at 224 px spends more time in page faults
    than in arithmetic: each batch's tensors are above the mmap threshold, so they are
    mapped and unmapped every time. Serving everything from the heap and never trimming
    it took MobileNetV2 inference here from ~40 to ~100 images/s. A user's own
    GLIBC_TUNABLES wins. Returns whether the settings were applied.

    Also skips the interpreter's last garbage collections at exit: they walk every object
    torch, timm and the stage made, ~1 s of every stage's run here for memory the OS takes
    back anyway (objects are still freed by reference counting).
    """
    atexit.unregister(gc.freeze)  # once, however often stages call this
    atexit.register(gc.freeze)
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok = libc.mallopt(m_mmap_max, 0) == 1
    return bool(ok and libc.mallopt(m_trim_threshold, 1 << 30) == 1)


def cache_dir() -> Path:
    """Folder for content-keyed caches (decoded images, backbone features).

    It lives outside the repository so that `dvc exp run --queue`, which runs each
    experiment in a temporary copy, shares it. Entries are keyed by content hashes,
    so a stale entry can never be served for changed input.
    """
    if "FACEMASK_CACHE" in os.environ:
        return Path(os.environ["FACEMASK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facemask"


def facemask_imports(module: str) -> set[str]:
    """Every `facemask` module that `module` imports, directly or through others (itself too).

    Read from the source (ast), not by importing: a module's file is what DVC hashes, so
    this is what a cache key or a stage's deps must cover.
    """
    import ast
    import importlib.util

    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no module named {name!r}")
        seen.add(name)
        tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module]
                package = found[0].startswith("facemask") and importlib.util.find_spec(found[0])
                if package and package.submodule_search_locations is not None:
                    # `from facemask.data import cache` imports facemask.data.cache
                    found += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for dep in found:
                if dep.split(".")[0] == "facemask" and importlib.util.find_spec(dep) is not None:
                    todo.append(dep)
    return seen


def module_file(module: str) -> Path:
    """The source file of an importable module."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module named {module!r}")
    return Path(spec.origin)


def code_fingerprint(*modules: str) -> str:
    """16 hex digits of sha256 over the source of `modules` and every facemask module they import.

    Caches outside DVC (features, checkpoints, CV folds) put this in their keys, so that a
    change to the code that produced an entry makes it a miss instead of a stale hit.
    """
    import hashlib

    h = hashlib.sha256()
    files = sorted({module_file(m) for name in modules for m in facemask_imports(name)})
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def exit_on_error(what: str) -> Iterator[None]:
    """Bad input ends a stage or command with one line on stderr and exit code 2, no traceback.

    The errors the code raises for bad input (a missing file, a wrong param, an unreadable
    archive) carry the file and the problem in their message; FACEMASK_DEBUG=1 re-raises
    them with the traceback, for developers.
    """
    try:
        yield
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        if os.environ.get("FACEMASK_DEBUG"):
            raise
        text = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        print(f"{what}: error: {text}", file=sys.stderr)
        raise SystemExit(2) from None
