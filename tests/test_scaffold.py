"""``tfs new-plugin``: the generated distribution installs, loads, and its tests run.

The component it writes keeps its kind's exact signatures; until filled in, every check fails
saying "fill in"; filled in, the generated tests pass against the really installed plugin.
"""

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Tfs
from transformer_from_scratch import conformance, scaffold
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.kinds import CONTRACTS, KINDS
from transformer_from_scratch.guide import method_names


def _load(path: Path, name: str) -> type:
    spec = importlib.util.spec_from_file_location(f"scaffolded_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type = getattr(module, scaffold.Plan("x", "mlp", name, path).class_name)
    return cls


def _generated(kind: str, tmp_path: Path) -> tuple[scaffold.Plan, type]:
    plan = scaffold.plan(f"tfs-my-{kind}", kind, None, tmp_path / kind)
    scaffold.write(plan)
    return plan, _load(plan.out / "src" / plan.package / f"{plan.component}.py", plan.component)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_component_has_its_kinds_exact_signatures(kind: str, tmp_path: Path) -> None:
    _, cls = _generated(kind, tmp_path)
    for method in method_names(kind):
        contract = getattr(CONTRACTS[kind], "__call__" if method == "forward" else method)
        written = inspect.signature(getattr(cls, method))
        assert written == inspect.signature(contract), f"{kind}.{method}: {written}"
    injected = list(inspect.signature(cls).parameters)
    assert injected == ["dims", *KINDS[kind].injected]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unfilled_it_fails_the_suite_saying_fill_in(kind: str, tmp_path: Path) -> None:
    plan, cls = _generated(kind, tmp_path)
    report = conformance.check(cls, kind=kind)
    assert not report.ok
    for failure in report.failed:
        assert scaffold.FILL_IN in failure.message and plan.component in failure.message, failure


def test_it_refuses_bad_names_and_never_overwrites(tmp_path: Path) -> None:
    with pytest.raises(TfsError, match="not a distribution name"):
        scaffold.plan("my plugin", "mlp", None, tmp_path / "a")
    with pytest.raises(TfsError, match="did you mean 'mlp'"):
        scaffold.plan("tfs-x", "mlpp", None, tmp_path / "a")
    with pytest.raises(TfsError, match="--component NAME"):
        scaffold.plan("tfs-9x", "mlp", None, tmp_path / "a")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TfsError, match="not empty"):
        scaffold.plan("tfs-x", "mlp", None, mine)
    assert (mine / "notes.txt").read_text() == "keep me"


# What a plugin author writes into the scaffold: a ReLU MLP.
PARAMETERS = """        d, m = dims.d_model, dims.d_mlp
        self.W_in = nn.Parameter(torch.randn(d, m) * 0.02)
        self.W_out = nn.Parameter(torch.randn(m, d) * 0.02)
"""
BODY = """        pre = self.hook_pre(residual @ self.W_in)
        return self.hook_post(torch.relu(pre)) @ self.W_out
"""


def _fill_in(source: str) -> str:
    start = source.index("        raise NotImplementedError(")
    end = source.index("        )\n", start) + len("        )\n")
    marker = "        # Make your parameters here"
    source = source[:start] + BODY + source[end:]
    source = source.replace(marker, PARAMETERS + marker)
    return "import torch\n" + source


def test_filled_in_and_installed_it_loads_and_its_tests_pass(tfs_cli: Tfs, tmp_path: Path) -> None:
    out = tmp_path / "tfs-relu2"
    made = tfs_cli("new-plugin", "tfs-relu2", "--kind", "mlp", "--out", str(out))
    assert made.returncode == 0, made.stderr
    component = out / "src" / "tfs_relu2" / "relu2.py"
    assert str(component) in made.stdout and "pip install -e" in made.stdout
    component.write_text(_fill_in(component.read_text()))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(site), str(out)]  # fmt: skip
    installed = subprocess.run(pip, capture_output=True, text=True, check=False)
    assert installed.returncode == 0, installed.stderr
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listed = tfs_cli("list", extra_env=env)
    assert "relu2" in listed.stdout and "tfs-relu2 0.1.0" in listed.stdout, listed.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(out / "tests")],
        capture_output=True, text=True, cwd=out, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
