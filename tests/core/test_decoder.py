"""The assembled decoder: shapes, the KV cache, the context window, causality end to end."""

from collections.abc import Callable

import pytest
import torch

import transformer_from_scratch as tfs

SpecMaker = Callable[..., tfs.DecoderSpec]


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "none"])
@pytest.mark.parametrize("block", ["pre_norm", "post_norm", "res_post_norm"])
def test_cached_decoding_equals_the_full_forward(
    tiny_spec: SpecMaker, positional: str, block: str
) -> None:
    decoder = tfs.build_decoder(tiny_spec(positional=positional, block=block)).eval()
    tokens = torch.randint(0, 11, (2, 9))
    full = decoder(tokens)
    cache = decoder.new_cache()
    pieces = [decoder(tokens[:, :4], cache=cache)]
    pieces += [decoder(tokens[:, i : i + 1], cache=cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == 9


def test_last_only_gives_the_last_positions_logits(tiny_spec: SpecMaker) -> None:
    """With and without a cache; the unembedding sees one position per sample."""
    decoder = tfs.build_decoder(tiny_spec()).eval()
    tokens = torch.randint(0, 11, (3, 7))
    full = decoder(tokens)
    seen: list[tuple[int, ...]] = []
    with decoder.hooks([("unembed.hook_in", lambda x, hook: seen.append(tuple(x.shape)))]):
        torch.testing.assert_close(decoder(tokens, last_only=True), full[:, -1:])
        cache = decoder.new_cache()
        decoder(tokens[:, :4], cache=cache, last_only=True)
        last = decoder(tokens[:, 4:], cache=cache, last_only=True)
    torch.testing.assert_close(last, full[:, -1:])
    assert seen == [(3, 1, 16)] * 3


def test_grouped_query_attention_decodes_with_a_cache(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec(n_heads=4, d_head=4, n_kv_heads=2)).eval()
    assert decoder.blocks[0].attention.W_K.shape == (2, 16, 4)
    tokens = torch.randint(0, 11, (2, 6))
    cache = decoder.new_cache()
    steps = [decoder(tokens[:, i : i + 1], cache=cache) for i in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), decoder(tokens))


def test_changing_a_later_token_never_changes_earlier_logits(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec()).eval()
    tokens = torch.randint(0, 11, (1, 8))
    changed = tokens.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 11
    before, after = decoder(tokens), decoder(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_input_longer_than_the_context_window_is_refused(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec(n_ctx=8))
    with pytest.raises(tfs.TfsError, match=r"reaches position 8.*holds positions 0..7"):
        decoder(torch.zeros(1, 9, dtype=torch.long))
    cache = decoder.new_cache()
    decoder(torch.zeros(1, 8, dtype=torch.long), cache=cache)
    with pytest.raises(tfs.TfsError, match="n_ctx"):
        decoder(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_the_tied_unembedding_shares_the_embedding_tensor(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec())
    assert decoder.unembedding.weight is decoder.embedding.weight
    with torch.no_grad():
        decoder.embedding.weight[3, 0] = 42.0
    assert decoder.unembedding.weight[3, 0] == 42.0
