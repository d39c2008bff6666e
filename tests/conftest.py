"""Shared fixtures: tiny seeded specs, fresh registries and throwaway plugin distributions."""

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import transformer_from_scratch as tfs

# Tiny models run fastest on one thread, and several test processes (pytest -n, the CLI's
# subprocesses) must not fight over the cores: one torch thread per process.
THREADS = int(os.environ.get("TFS_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)
os.environ["TFS_THREADS"] = str(THREADS)  # (and commands run in-process take the same)

# PyTorch gives some warnings once per process; with warnings as errors, a test would then fail
# or pass depending on whether an earlier test in the same process had met the warning first.
# Always warning makes every test's result its own.
torch.set_warn_always(True)

TINY = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "d_head": 8,
    "d_mlp": 32,
    "d_vocab": 11,
    "n_ctx": 16,
}


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    """Every test starts from the same random state and leaves the default registry fresh."""
    torch.manual_seed(0)
    yield
    tfs.default_registry.cache_clear()


@pytest.fixture
def tiny_spec() -> Callable[..., tfs.DecoderSpec]:
    """Make a tiny spec; keyword arguments change sizes or name components."""

    def make(**changes: Any) -> tfs.DecoderSpec:
        return tfs.DecoderSpec.from_dict(TINY).evolve(**changes)

    return make


@pytest.fixture
def builtin_registry() -> tfs.Registry:
    """A fresh registry with the built-in components only."""
    return tfs.load_registry(autoload=False)


DistMaker = Callable[..., Path]


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DistMaker:
    """Install a real throwaway distribution (a dist-info folder plus modules) on ``sys.path``.

    ``importlib.metadata`` finds it exactly as it finds a pip-installed package, so the plugin
    loader sees a real entry point, distribution name and version.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str],
             version: str = "1.0") -> Path:  # fmt: skip
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = [f"{ep} = {target}" for ep, target in entry_points.items()]
        (info / "entry_points.txt").write_text(
            "[transformer_from_scratch]\n" + "\n".join(lines) + "\n"
        )
        return info

    return make


Tfs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def tfs_cli(tmp_path: Path) -> Tfs:
    """Run ``tfs ARGS`` as a user would; returns the completed process (never raises)."""
    script = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
    env = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": str(THREADS)}

    def run(
        *args: str, cwd: Path = tmp_path, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args],
            cwd=cwd,
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run
