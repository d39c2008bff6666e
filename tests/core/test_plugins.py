"""Plugin loading with real throwaway distributions: isolation, reporting, strict mode."""

import pytest

import transformer_from_scratch as tfs
from tests.conftest import DistMaker
from transformer_from_scratch.core.plugins import PluginLoadWarning

GOOD = """
from torch import nn
from transformer_from_scratch import hookimpl

class Halver(nn.Module):
    '''Halves the residual stream.'''
    def __init__(self, dims):
        super().__init__()
    def forward(self, residual):
        return residual / 2

@hookimpl
def register_components(registry):
    registry.register("mlp", "{name}", Halver)
"""


def test_a_good_plugin_is_registered_with_its_distribution(make_distribution: DistMaker) -> None:
    make_distribution(
        "tfs-good",
        {"tfs_good_a": GOOD.format(name="halver")},
        {"good": "tfs_good_a"},
        version="3.1",
    )
    registry = tfs.load_registry(strict=True)
    entry = registry.get("mlp", "halver")
    assert (entry.provider.plugin, entry.provider.distribution, entry.provider.version) == (
        "good",
        "tfs-good",
        "3.1",
    )
    assert entry.description == "Halves the residual stream."


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(
    make_distribution: DistMaker,
) -> None:
    make_distribution(
        "tfs-broken",
        {"tfs_broken_b": "import not_a_module_anywhere\n"},
        {"broken": "tfs_broken_b"},
        version="0.2",
    )
    make_distribution(
        "tfs-good", {"tfs_good_b": GOOD.format(name="halver")}, {"good": "tfs_good_b"}
    )
    with pytest.warns(
        PluginLoadWarning, match="plugin 'broken' from tfs-broken 0.2: could not be imported"
    ):
        registry = tfs.load_registry()
    assert ("mlp", "halver") in registry
    assert ("mlp", "gelu") in registry
    [failure] = [f for f in registry.failures if f.plugin == "broken"]
    assert failure.distribution == "tfs-broken"
    assert failure.version == "0.2"
    assert "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in failure.error


def test_a_plugin_that_raises_keeps_nothing_it_registered(make_distribution: DistMaker) -> None:
    source = GOOD.format(name="halver") + "\n    raise RuntimeError('half-way')\n"
    make_distribution("tfs-raiser", {"tfs_raiser": source}, {"raiser": "tfs_raiser"})
    with pytest.warns(PluginLoadWarning, match="RuntimeError: half-way"):
        registry = tfs.load_registry()
    assert ("mlp", "halver") not in registry


def test_a_plugin_that_calls_sys_exit_is_contained(make_distribution: DistMaker) -> None:
    make_distribution(
        "tfs-exiter", {"tfs_exiter": "import sys\nsys.exit(3)\n"}, {"exiter": "tfs_exiter"}
    )
    with pytest.warns(PluginLoadWarning, match=r"called sys.exit\(3\)"):
        registry = tfs.load_registry()
    assert registry.failures[0].plugin == "exiter"


def test_two_plugins_with_one_name_name_both_providers(make_distribution: DistMaker) -> None:
    make_distribution(
        "tfs-first", {"tfs_first": GOOD.format(name="halver")}, {"first": "tfs_first"}
    )
    make_distribution(
        "tfs-second", {"tfs_second": GOOD.format(name="halver")}, {"second": "tfs_second"}
    )
    with pytest.warns(PluginLoadWarning) as caught:
        registry = tfs.load_registry()
    message = str(caught[0].message)
    assert (
        "mlp/halver is registered twice: by tfs-first 1.0 (plugin 'first') and by tfs-second 1.0 (plugin 'second')"
        in message
    )
    assert registry.get("mlp", "halver").provider.distribution == "tfs-first"


def test_a_plugin_cannot_override_a_builtin(make_distribution: DistMaker) -> None:
    make_distribution(
        "tfs-usurper", {"tfs_usurper": GOOD.format(name="gelu")}, {"usurper": "tfs_usurper"}
    )
    with pytest.raises(
        tfs.PluginError, match=r"mlp/gelu is registered twice: by transformer-from-scratch"
    ):
        tfs.load_registry(strict=True)


def test_a_misspelt_hook_is_rejected_with_the_plugins_name(make_distribution: DistMaker) -> None:
    source = "from transformer_from_scratch import hookimpl\n\n@hookimpl\ndef register_component(registry):\n    pass\n"
    make_distribution("tfs-typo", {"tfs_typo": source}, {"typo": "tfs_typo"})
    with pytest.warns(
        PluginLoadWarning,
        match="plugin 'typo' from tfs-typo 1.0: PluginValidationError.*register_component",
    ):
        tfs.load_registry()


def test_a_hook_with_an_unknown_argument_is_rejected(make_distribution: DistMaker) -> None:
    source = "from transformer_from_scratch import hookimpl\n\n@hookimpl\ndef register_components(registry, config):\n    pass\n"
    make_distribution("tfs-args", {"tfs_args": source}, {"args": "tfs_args"})
    with pytest.warns(
        PluginLoadWarning, match="plugin 'args' from tfs-args 1.0: PluginValidationError.*config"
    ):
        tfs.load_registry()


def test_a_plugin_without_hooks_is_reported(make_distribution: DistMaker) -> None:
    make_distribution("tfs-empty", {"tfs_empty": "x = 1\n"}, {"empty": "tfs_empty"})
    with pytest.warns(PluginLoadWarning, match="defines no @hookimpl register_components"):
        tfs.load_registry()


def test_strict_mode_from_the_environment(
    make_distribution: DistMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        "tfs-broken", {"tfs_broken_s": "raise ValueError('nope')\n"}, {"broken": "tfs_broken_s"}
    )
    monkeypatch.setenv("TFS_STRICT_PLUGINS", "1")
    with pytest.raises(tfs.PluginError, match=r"ValueError: nope.*TFS_STRICT_PLUGINS is set"):
        tfs.load_registry()


def test_autoload_can_be_disabled_from_the_environment(
    make_distribution: DistMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        "tfs-good", {"tfs_good_d": GOOD.format(name="halver")}, {"good": "tfs_good_d"}
    )
    monkeypatch.setenv("TFS_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = tfs.load_registry()
    assert ("mlp", "halver") not in registry
    assert ("mlp", "gelu") in registry


def test_builtins_are_registered_through_the_hook_with_their_distribution(
    builtin_registry: tfs.Registry,
) -> None:
    entry = builtin_registry.get("mlp", "gelu")
    assert entry.provider.plugin == "builtin"
    assert entry.provider.distribution == "transformer-from-scratch"
    assert builtin_registry.preset_names() == [
        "gpt2",
        "gpt_neox",
        "llama",
        "mistral",
        "seed",
        "small",
        "tiny",
    ]
