"""Hook points, run_with_hooks / run_with_cache, the activation cache and patching."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.core.hooks import HookPoint, OutputHook
from transformer_from_scratch.interp import logit_difference, patch

TOKENS = torch.tensor([[5, 17, 3, 99, 42, 7, 8], [1, 2, 3, 4, 5, 6, 7]])


def _decoder(**changes: object) -> tfs.Decoder:
    torch.manual_seed(0)
    spec = tfs.DecoderSpec.preset("tiny")
    return tfs.build_decoder(spec.evolve(**changes) if changes else spec).eval()


def _listeners(decoder: tfs.Decoder) -> int:
    torch_hooks = sum(len(m._forward_hooks) for m in decoder.modules())
    return torch_hooks + sum(len(p.fns) for p in decoder.hook_points().values())


def test_an_unknown_name_is_an_error_with_the_nearest_name() -> None:
    decoder = _decoder()
    with pytest.raises(tfs.TfsError, match=r"did you mean 'blocks.0.attn.hook_pattern'"):
        decoder.run_with_hooks(TOKENS, [("blocks.0.attn.hook_patern", lambda x, h: None)])
    parallel = _decoder(block="parallel")
    with pytest.raises(tfs.TfsError, match="no part of this model has a hook_resid_mid"):
        parallel.run_with_cache(TOKENS, names_filter="blocks.0.hook_resid_mid")
    linear = _decoder(attention_kernel="linear")
    with pytest.raises(tfs.TfsError, match="'linear' is approximate"):
        linear.run_with_cache(TOKENS, names_filter=["blocks.1.attn.hook_pattern"])
    assert _listeners(decoder) == _listeners(parallel) == _listeners(linear) == 0


def test_hooks_are_removed_afterwards_also_on_an_error() -> None:
    decoder = _decoder()

    def boom(x: torch.Tensor, hook: HookPoint) -> None:
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"):
        decoder.run_with_hooks(TOKENS, [("blocks.0.hook_attn_out", boom)])
    assert _listeners(decoder) == 0
    with pytest.raises(KeyError), decoder.hooks([(lambda n: "mlp" in n, lambda x, h: None)]):
        assert _listeners(decoder) > 0
        raise KeyError("in the with block")
    assert _listeners(decoder) == 0


def test_with_nobody_listening_a_hook_point_is_the_identity_and_attaches_nothing() -> None:
    decoder = _decoder()
    x = torch.randn(2, 3)
    for point in decoder.hook_points().values():
        assert point(x) is x
    assert all(not m._forward_hooks for m in decoder.modules())
    with decoder.hooks([("blocks.0.hook_mlp_out", lambda x, h: None)]):
        assert any(m._forward_hooks for m in decoder.modules())
    assert isinstance(decoder.hook_points()["blocks.0.hook_mlp_out"], OutputHook)


def test_a_replacement_of_the_wrong_shape_is_refused_by_name() -> None:
    decoder = _decoder()
    with pytest.raises(tfs.TfsError, match=r"a hook on blocks.0.mlp.hook_post returned \(2, 7\)"):
        decoder.run_with_hooks(TOKENS, [("blocks.0.mlp.hook_post", lambda x, h: x.sum(-1))])


def test_names_filter_takes_a_name_a_list_or_a_function() -> None:
    decoder = _decoder()
    _, one = decoder.run_with_cache(TOKENS, names_filter="hook_embed")
    _, two = decoder.run_with_cache(TOKENS, names_filter=["hook_embed", "unembed.hook_out"])
    _, per = decoder.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_resid_pre"))
    assert list(one) == ["hook_embed"] and sorted(two) == ["hook_embed", "unembed.hook_out"]
    assert list(per) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]


def test_cached_activations_are_detached_and_agree_with_the_logits() -> None:
    decoder = _decoder().train()
    logits, cache = decoder.run_with_cache(TOKENS)
    assert all(not t.requires_grad for t in cache.values())
    assert logits.requires_grad
    with torch.no_grad():
        assert torch.allclose(cache["unembed.hook_out"], logits)
        stack, labels = cache.accumulated_resid()
        assert labels == ["0_pre", "1_pre", "final_post"]
        parts, names = cache.decompose_resid()
        assert names[:2] == ["embed", "pos_embed"]
        assert torch.allclose(parts.sum(0), stack[-1], atol=1e-5)  # pre-norm adds straight in
        assert torch.allclose(cache.logit_lens()[-1], logits, atol=1e-5)


@pytest.mark.parametrize("kernel", ["flash", "sdpa"])
def test_kernels_that_never_build_scores_still_show_the_textbook_pattern(kernel: str) -> None:
    reference = _decoder()
    other = _decoder(attention_kernel=kernel)
    other.load_state_dict(reference.state_dict())
    _, want = reference.run_with_cache(TOKENS, names_filter=lambda n: "attn.hook_" in n)
    _, got = other.run_with_cache(TOKENS, names_filter=lambda n: "attn.hook_" in n)
    assert set(want) == set(got)
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6), name


def test_grouped_query_attention_shows_its_key_value_heads() -> None:
    decoder = _decoder(n_kv_heads=2)
    _, cache = decoder.run_with_cache(TOKENS, names_filter=lambda n: "blocks.0.attn" in n)
    assert cache["k", 0].shape == (2, 7, 2, 8) and cache["q", 0].shape == (2, 7, 4, 8)


def test_with_the_kv_cache_hooks_see_the_new_positions() -> None:
    decoder = _decoder()
    _, full = decoder.run_with_cache(TOKENS[:1], names_filter=lambda n: "blocks.1.attn" in n)
    kv, rows = decoder.new_cache(), []
    with decoder.hooks([("blocks.1.attn.hook_pattern", lambda x, h: rows.append(x))]):
        for i in range(TOKENS.shape[1]):
            decoder(TOKENS[:1, i : i + 1], cache=kv)
    assert [tuple(r.shape) for r in rows] == [(1, 4, 1, i + 1) for i in range(7)]
    for i, row in enumerate(rows):
        assert torch.allclose(row[0, :, 0], full["pattern", 1][0, :, i, : i + 1], atol=1e-5)


def test_patching_the_one_differing_embedding_restores_the_clean_run() -> None:
    decoder = _decoder()
    clean, corrupted = TOKENS[:1], TOKENS[:1].clone()
    corrupted[0, 2] = 77
    metric = logit_difference(int(TOKENS[0, 4]), 0)
    result = patch(decoder, clean, corrupted, metric, activation="resid_pre")
    assert result.grid.shape == (2, 7)
    assert result.grid[0, 2] == pytest.approx(result.clean, abs=1e-4)
    others = [c for c in range(7) if c != 2]
    assert torch.allclose(result.grid[0, others], torch.tensor(result.corrupted), atol=1e-4)
    normalised = result.normalised()
    assert normalised[0, 2] == pytest.approx(1.0, abs=1e-3)
    heads = patch(decoder, clean, corrupted, metric, activation="z", by="head")
    assert heads.grid.shape == (2, 4)


def test_patching_refuses_prompts_of_different_lengths() -> None:
    with pytest.raises(tfs.TfsError, match="same number of tokens"):
        patch(_decoder(), TOKENS[:1], TOKENS[:1, :5], logit_difference(1, 2))
    with pytest.raises(tfs.TfsError, match="no head axis"):
        patch(_decoder(), TOKENS[:1], TOKENS[:1], logit_difference(1, 2), "resid_pre", by="head")


@pytest.mark.parametrize("batch", [1, 2])
def test_position_vectors_can_be_patched_in_place_without_changing_the_table(batch: int) -> None:
    decoder = _decoder(positional={"name": "learned"}).eval()
    weight = decoder.positional.weight
    assert isinstance(weight, torch.Tensor)
    table = weight.detach().clone()
    tokens = TOKENS[:batch]

    def zero_position_3(activation: torch.Tensor, hook: HookPoint) -> None:
        activation[:, 3] = 0.0  # as patching code writes, in place

    with torch.no_grad():
        clean = decoder(tokens)
        patched = decoder.run_with_hooks(tokens, [("hook_pos_embed", zero_position_3)])
        again = decoder(tokens)
    assert torch.equal(weight, table)
    assert torch.equal(again, clean)
    assert not torch.allclose(patched[:, 3:], clean[:, 3:])
    assert torch.equal(patched[:, :3], clean[:, :3])
