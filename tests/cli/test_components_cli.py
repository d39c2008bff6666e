"""``tfs list``, ``tfs spec show|diff`` and ``tfs build``, run as a user runs them."""

from pathlib import Path

import transformer_from_scratch as tfs
from tests.conftest import Tfs


def test_list_shows_each_component_with_its_provider(tfs_cli: Tfs) -> None:
    result = tfs_cli("list")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    [row] = [r for r in rows if r[:2] == ["attention_kernel", "materialized"]]
    assert row[2:7] == [
        "exact,",
        "kv_cache,",
        "score_bias,",
        "sliding_window",
        "transformer-from-scratch",
    ]
    assert any(row[:2] == ["preset", "provider"] for row in rows)


def test_spec_show_prints_toml_that_loads_back(tfs_cli: Tfs, tmp_path: Path) -> None:
    result = tfs_cli("spec", "show", "seed")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "seed.toml"
    path.write_text(result.stdout)
    assert tfs.load_spec(path) == tfs.DecoderSpec.preset("seed")


def test_build_prints_parameter_counts_per_kind(tfs_cli: Tfs) -> None:
    result = tfs_cli("build", "tiny")
    assert result.returncode == 0, result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines()[3:])
    assert counts["embedding"] == "8,192"
    assert counts["total"] == f"{sum(tfs.build_decoder('tiny').parameter_counts().values()):,}"


def test_build_reads_a_spec_file(tfs_cli: Tfs, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(tfs.DecoderSpec.preset("tiny").evolve(n_layers=1, mlp="relu").to_toml())
    result = tfs_cli("build", str(path))
    assert result.returncode == 0, result.stderr
    assert "mlp=relu" in result.stdout


def test_bad_input_exits_2_with_one_line_and_no_traceback(tfs_cli: Tfs) -> None:
    result = tfs_cli("build", "gtp2")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tfs build: error: 'gtp2' is neither a spec file nor a preset; did you mean 'gpt2'? "
        "(presets: gpt2, gpt_neox, llama, mistral, seed, small, tiny)"
    )
    assert "Traceback" not in result.stderr


def test_a_bad_spec_file_lists_every_problem(tfs_cli: Tfs, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'd_model = 0\nn_layers = 1\nn_heads = 1\nd_head = 4\nd_mlp = 4\nd_vocab = 4\nn_ctx = 4\n[components]\nmlp = "rleu"\n'
    )
    result = tfs_cli("build", str(path))
    assert result.returncode == 2
    assert "d_model: must be positive, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tfs_cli: Tfs) -> None:
    result = tfs_cli("--debug", "build", "gtp2")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_spec_diff_lists_differing_fields(tfs_cli: Tfs) -> None:
    result = tfs_cli("spec", "diff", "gpt2", "seed")
    assert result.returncode == 1
    assert "components.block.name               pre_norm  res_post_norm" in result.stdout
    same = tfs_cli("spec", "diff", "gpt2", "gpt2")
    assert (same.returncode, same.stdout.strip()) == (0, "the specs are identical")


def test_build_shows_per_layer_overrides(tfs_cli: Tfs, tmp_path: Path) -> None:
    spec = tmp_path / "layers.toml"
    spec.write_text(
        "d_model = 32\nn_layers = 4\nn_heads = 2\nd_head = 16\nd_mlp = 64\nd_vocab = 50\n"
        'n_ctx = 16\n[[layers]]\nevery = 2\nmlp = "relu"\n'
    )
    result = tfs_cli("build", str(spec))
    assert result.returncode == 0, result.stderr
    assert "  then, for every 2 blocks from block 0: mlp=relu" in result.stdout
