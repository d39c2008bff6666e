"""``tfs check`` run as a user runs it: the table, JSON, exit codes."""

import json
import os
from pathlib import Path

from tests.conftest import DistMaker, Tfs

BROKEN_PLUGIN = """
import torch
from torch import nn
from transformer_from_scratch import hookimpl

class NoisyMLP(nn.Module):
    '''An MLP that adds noise even in eval mode.'''
    def __init__(self, dims):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dims.d_model, dims.d_model) * 0.1)
    def forward(self, residual):
        return residual @ self.w + 0.01 * torch.randn_like(residual)

@hookimpl
def register_components(registry):
    registry.register("mlp", "noisy_mlp", NoisyMLP)
"""


def test_check_prints_the_table_and_writes_json(tfs_cli: Tfs, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = tfs_cli("check", "--kind", "mlp", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("implementation")
    assert any(line.startswith("mlp/gelu ") for line in lines)
    assert "checks run:" in lines[-2]
    data = json.loads(out.read_text())
    assert {r["implementation"] for r in data["results"]} >= {"mlp/gelu", "mlp/relu"}
    assert data["counts"]["FAIL"] == 0


def test_check_exits_1_when_an_installed_plugin_fails(
    tfs_cli: Tfs, make_distribution: DistMaker, tmp_path: Path
) -> None:
    info = make_distribution("tfs-noisy", {"tfs_noisy": BROKEN_PLUGIN}, {"noisy": "tfs_noisy"})
    path = os.pathsep.join([str(info.parent), os.environ.get("PYTHONPATH", "")])
    result = tfs_cli("check", "--plugin", "tfs-noisy", extra_env={"PYTHONPATH": path})
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "FAIL   mlp/noisy_mlp check_eval_deterministic: two eval-mode runs on one input differ"
        in result.stdout
    )
    assert "failed" in result.stdout.splitlines()[-1]


def test_check_names_an_unknown_implementation(tfs_cli: Tfs) -> None:
    result = tfs_cli("check", "rleu")
    assert result.returncode == 2
    assert "unknown implementation 'rleu'; did you mean 'relu'?" in result.stderr


GOOD_KERNEL = """
import math
import torch
from torch import nn
from transformer_from_scratch import hookimpl

class PlainKernel(nn.Module):
    '''Textbook attention, written by a third party.'''
    def __init__(self, dims, window=None):
        super().__init__()
        self.window = window
    def forward(self, q, k, v, *, query_positions, key_positions, score_bias=None):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if score_bias is not None:
            scores = scores + score_bias
        offset = query_positions[:, None] - key_positions[None, :]
        hidden = offset < 0
        if self.window is not None:
            hidden = hidden | (offset >= self.window)
        return torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1) @ v

@hookimpl
def register_components(registry):
    registry.register("attention_kernel", "plain_kernel", PlainKernel,
                      capabilities=["exact", "kv_cache", "score_bias", "sliding_window"])
"""

BROKEN_POSITIONAL = """
import torch
from transformer_from_scratch import PositionalEncoding, hookimpl

class LogAlibi(PositionalEncoding):
    '''ALiBi with log(distance): +inf on the diagonal.'''
    def __init__(self, dims):
        super().__init__()
        self.n_heads = dims.n_heads
    def score_bias(self, query_positions, key_positions):
        distance = (query_positions[:, None] - key_positions[None, :]).float().clamp_min(0)
        return -torch.log(distance)[None].expand(self.n_heads, -1, -1)

@hookimpl
def register_components(registry):
    registry.register("positional", "log_alibi", LogAlibi, capabilities=["score_bias"])
"""


def test_a_correct_plugin_stays_green_beside_a_broken_one(
    tfs_cli: Tfs, make_distribution: DistMaker
) -> None:
    good = make_distribution("tfs-good", {"tfs_good": GOOD_KERNEL}, {"good": "tfs_good"})
    make_distribution("tfs-bad", {"tfs_bad": BROKEN_POSITIONAL}, {"bad": "tfs_bad"})
    env = {"PYTHONPATH": os.pathsep.join([str(good.parent), os.environ.get("PYTHONPATH", "")])}
    result = tfs_cli("check", "plain_kernel", extra_env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attention_kernel/plain_kernel[window=1]" in result.stdout  # options through the CLI
    assert "positional/log_alibi is at fault, not attention_kernel/plain_kernel" in result.stdout
    blamed = tfs_cli("check", "log_alibi", "--jobs", "2", extra_env=env)
    assert blamed.returncode == 1
    assert "FAIL   positional/log_alibi check_combinations:" in blamed.stdout


def test_check_options_threads_and_jobs_are_validated(tfs_cli: Tfs) -> None:
    result = tfs_cli("check", "materialized", "--option", "window=2", "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attention_kernel/materialized[window=2]" in result.stdout
    assert "attention_kernel/materialized[window=1]" not in result.stdout
    bad = tfs_cli("check", "--jobs", "0")
    assert bad.returncode == 2 and "must be a whole number of at least 1" in bad.stderr
    bad = tfs_cli("check", "materialized", "--option", "window")
    assert bad.returncode == 2 and "write KEY=VALUE" in bad.stderr
