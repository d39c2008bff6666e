"""The registry: entries, lookups with suggestions, clashes, capability vocabulary."""

import pytest
from torch import nn

import transformer_from_scratch as tfs
from transformer_from_scratch.core.registry import Provider


class Doubler(nn.Module):
    """Doubles its input.

    More text that is not the description.
    """

    def __init__(self, dims: tfs.Dims, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor


def test_register_records_description_provider_and_capabilities() -> None:
    registry = tfs.Registry(Provider("mine", "my-dist", "1.2"))
    entry = registry.register("mlp", "doubler", Doubler)
    assert entry.description == "Doubles its input."
    assert entry.provider == Provider("mine", "my-dist", "1.2")
    assert entry.id == "mlp/doubler"
    assert registry.get("mlp", "doubler") is entry
    assert registry.names("mlp") == ["doubler"]


def test_unknown_name_suggests_the_closest_and_lists_registered(
    builtin_registry: tfs.Registry,
) -> None:
    with pytest.raises(tfs.UnknownComponentError) as err:
        builtin_registry.get("attention_kernel", "materialised")
    message = str(err.value)
    assert "unknown attention_kernel 'materialised'; did you mean 'materialized'?" in message
    assert "registered: flash, linear, materialized, sdpa" in message


def test_unknown_name_without_a_close_match_still_lists_names(
    builtin_registry: tfs.Registry,
) -> None:
    with pytest.raises(
        tfs.UnknownComponentError, match=r"'zzz'; registered: geglu, gelu, relu, swiglu"
    ):
        builtin_registry.get("mlp", "zzz")


def test_unknown_kind_is_refused_with_the_kinds_listed() -> None:
    with pytest.raises(tfs.TfsError, match=r"unknown kind 'mpl'; did you mean 'mlp'\?"):
        tfs.Registry().register("mpl", "doubler", Doubler)


def test_second_registration_names_both_providers() -> None:
    first = tfs.Registry(Provider("a", "dist-a", "1"))
    first.register("mlp", "doubler", Doubler)
    second = tfs.Registry(Provider("b", "dist-b", "2"))
    second.register("mlp", "doubler", Doubler)
    with pytest.raises(tfs.DuplicateComponentError) as err:
        first.merge(second)
    assert "dist-a 1 (plugin 'a')" in str(err.value)
    assert "dist-b 2 (plugin 'b')" in str(err.value)


def test_merge_is_all_or_nothing() -> None:
    first = tfs.Registry()
    first.register("mlp", "doubler", Doubler)
    second = tfs.Registry()
    second.register("norm", "fresh", Doubler)
    second.register("mlp", "doubler", Doubler)
    with pytest.raises(tfs.DuplicateComponentError):
        first.merge(second)
    assert ("norm", "fresh") not in first


@pytest.mark.parametrize("name", ["Doubler", "2x", "my-mlp", ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(tfs.TfsError, match="lower-case letters"):
        tfs.Registry().register("mlp", name, Doubler)


def test_capabilities_outside_the_kinds_vocabulary_are_refused() -> None:
    with pytest.raises(tfs.TfsError, match=r"unknown capabilities \['exakt'\]"):
        tfs.Registry().register("attention_kernel", "k", Doubler, capabilities=["exakt"])


def test_options_are_read_from_the_factory_signature() -> None:
    entry = tfs.Registry().register("mlp", "doubler", Doubler)
    assert list(entry.options() or {}) == ["factor"]
    problems = entry.option_problems({"factr": 3}, "components.mlp.options")
    assert problems == [
        "components.mlp.options.factr: mlp/doubler takes no option 'factr'; did you mean "
        "'factor'? (it takes: factor)"
    ]


def test_injected_parts_are_not_options(builtin_registry: tfs.Registry) -> None:
    options = builtin_registry.get("attention", "multi_head").options() or {}
    assert "kernel" not in options
    assert set(options) == {"bias", "init", "qk_norm"}


def test_presets_clash_like_components() -> None:
    first = tfs.Registry(Provider("a", "dist-a", "1"))
    first.register_preset("mine", {})
    second = tfs.Registry(Provider("b", "dist-b", "1"))
    second.register_preset("mine", {})
    with pytest.raises(tfs.DuplicateComponentError, match="preset 'mine' is registered twice"):
        first.merge(second)


def test_unknown_preset_suggests(builtin_registry: tfs.Registry) -> None:
    with pytest.raises(tfs.TfsError, match=r"unknown preset 'gtp2'; did you mean 'gpt2'\?"):
        builtin_registry.preset("gtp2")
