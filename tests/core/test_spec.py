"""Specs: round trips through dict/TOML/JSON, and every problem reported at once."""

from pathlib import Path
from typing import Any

import pytest

import transformer_from_scratch as tfs
from tests.conftest import TINY as CONFTEST_TINY
from transformer_from_scratch.components.presets import PRESETS

TINY: dict[str, Any] = dict(CONFTEST_TINY)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_round_trip_through_dict_toml_and_json(preset: str) -> None:
    spec = tfs.DecoderSpec.preset(preset)
    assert tfs.DecoderSpec.from_dict(spec.to_dict()) == spec
    assert tfs.DecoderSpec.from_toml(spec.to_toml()) == spec
    assert tfs.DecoderSpec.from_json(spec.to_json()) == spec
    assert tfs.DecoderSpec.from_toml(spec.to_toml()).to_dict() == spec.to_dict()


def test_options_survive_the_round_trip() -> None:
    spec = tfs.DecoderSpec.from_dict(
        {
            **TINY,
            "n_kv_heads": 1,
            "components": {"mlp": {"name": "gelu", "options": {"approximate": "tanh"}}},
        }
    )
    assert spec.components.mlp == tfs.Component("gelu", {"approximate": "tanh"})
    again = tfs.DecoderSpec.from_toml(spec.to_toml())
    assert again == spec
    assert again.components.mlp.options == {"approximate": "tanh"}
    assert again.n_kv_heads == 1


def test_missing_components_take_the_gpt2_choices() -> None:
    spec = tfs.DecoderSpec.from_dict(TINY)
    names = {kind: c.name for kind, c in spec.components.items()}
    assert names == {
        "embedding": "embedding",
        "positional": "learned",
        "attention": "multi_head",
        "attention_kernel": "materialized",
        "mlp": "gelu",
        "norm": "layer_norm",
        "block": "pre_norm",
        "unembedding": "tied",
    }


def test_every_problem_is_reported_at_once_with_path_value_and_fix() -> None:
    bad = {
        **TINY,
        "d_modle": 3,
        "n_heads": True,
        "d_mlp": -4,
        "n_ctx": "64",
        "components": {"mpl": "relu", "norm": {"nme": "layer_norm"}},
    }
    with pytest.raises(tfs.SpecError) as err:
        tfs.DecoderSpec.from_dict(bad)
    problems = err.value.problems
    assert any(p.startswith("d_modle: unknown field; did you mean 'd_model'?") for p in problems)
    assert "n_heads: expected a whole number, got True (bool)" in problems
    assert "d_mlp: must be positive, got -4" in problems
    assert "n_ctx: expected a whole number, got '64' (str)" in problems
    assert any(p.startswith("components.mpl: unknown field; did you mean 'mlp'?") for p in problems)
    assert any(
        p.startswith("components.norm.nme: unknown field; did you mean 'name'?") for p in problems
    )
    assert any(p.startswith("components.norm.name: missing") for p in problems)
    assert len(problems) == 7
    assert str(err.value).startswith("spec has 7 problems:")


def test_missing_sizes_are_named() -> None:
    data = dict(TINY)
    del data["d_head"]
    with pytest.raises(tfs.SpecError, match=r"d_head: missing; add `d_head = <int>`"):
        tfs.DecoderSpec.from_dict(data)


def test_kv_heads_must_divide_heads() -> None:
    with pytest.raises(
        tfs.SpecError, match=r"n_kv_heads: 3 does not divide n_heads = 4.*\[1, 2, 4\]"
    ):
        tfs.DecoderSpec.from_dict({**TINY, "n_heads": 4, "n_kv_heads": 3})


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(tfs.SpecError, match="d_model: must be positive, got 0"):
        tfs.DecoderSpec(**{**TINY, "d_model": 0})


def test_specs_hold_plain_values_only() -> None:
    with pytest.raises(tfs.SpecError, match="is not a plain value"):
        tfs.DecoderSpec.from_dict(
            {**TINY, "components": {"mlp": {"name": "gelu", "options": {"fn": print}}}}
        )


def test_bad_toml_and_json_say_so(tmp_path: Path) -> None:
    with pytest.raises(tfs.SpecError, match="not valid TOML"):
        tfs.DecoderSpec.from_toml("d_model = = 3")
    with pytest.raises(tfs.SpecError, match="expected a JSON object"):
        tfs.DecoderSpec.from_json("[1, 2]")
    with pytest.raises(tfs.SpecError, match="cannot read"):
        tfs.DecoderSpec.from_file(tmp_path / "absent.toml")


def test_load_spec_checks_names_and_options_against_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    text = tfs.DecoderSpec.from_dict(TINY).to_toml()
    text += '\n[components.attention_kernel]\nname = "materialised"\n'
    text += '\n[components.mlp]\nname = "gelu"\noptions = { approximat = "tanh" }\n'
    path.write_text(
        text.replace('attention_kernel = "materialized"\n', "").replace('mlp = "gelu"\n', "")
    )
    with pytest.raises(tfs.SpecError) as err:
        tfs.load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path} has 2 problems:")
    assert (
        "components.attention_kernel: unknown attention_kernel 'materialised'; did you mean 'materialized'?"
        in message
    )
    assert (
        "components.mlp.options.approximat: mlp/gelu takes no option 'approximat'; did you mean 'approximate'?"
        in message
    )


def test_implementation_validators_join_the_report(tmp_path: Path) -> None:
    spec = tfs.DecoderSpec.from_dict(
        {
            **TINY,
            "d_model": 15,
            "components": {
                "positional": "sinusoidal",
                "mlp": {"name": "gelu", "options": {"approximate": "fast"}},
            },
        }
    )
    with pytest.raises(tfs.SpecError) as err:
        tfs.check_spec(spec, tfs.default_registry())
    assert (
        "components.positional: sinusoidal pairs sin and cos features, so d_model must be even (got 15)"
        in err.value.problems
    )
    assert (
        "components.mlp: option approximate = 'fast' is not one of 'none', 'tanh'"
        in err.value.problems
    )


def test_load_spec_reports_field_and_registry_problems_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "d_modle = 128\nd_model = 128\nn_layers = 4\nn_heads = true\nd_head = 32\nd_mlp = 512\n"
        'd_vocab = 256\nn_ctx = 64\n[components]\nattention_kernel = "flsh"\n'
    )
    with pytest.raises(tfs.SpecError) as err:
        tfs.load_spec(path)
    assert len(err.value.problems) == 3
    problem = err.value.problems[2]
    assert problem.startswith(
        "components.attention_kernel: unknown attention_kernel 'flsh'; did you mean 'flash'? registered: "
    )
    # every built-in kernel is listed (installed plugins' kernels may be listed beside them)
    listed = problem.split("registered: ")[1].split(", ")
    assert {"flash", "linear", "materialized", "sdpa"} <= {name.split(" ")[0] for name in listed}
