"""Generation: the KV cache gives the same logits and tokens; sampling options; stopping."""

from collections.abc import Callable

import attrs
import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.generation.generate import (
    GenerationConfig,
    can_cache,
    fit_prompt,
    generate,
)
from transformer_from_scratch.generation.sampling import filter_logits

SpecMaker = Callable[..., tfs.DecoderSpec]


@pytest.fixture
def decoder(tiny_spec: SpecMaker) -> tfs.Decoder:
    return tfs.build_decoder(tiny_spec(n_ctx=12)).eval()


def test_cached_and_uncached_generation_give_the_same_tokens(decoder: tfs.Decoder) -> None:
    assert can_cache(decoder)
    for config in (GenerationConfig(max_new_tokens=20, temperature=0),
                   GenerationConfig(max_new_tokens=20, temperature=1.0, top_k=5, seed=3)):  # fmt: skip
        cached = list(generate(decoder, [1, 2, 3], config))
        plain = list(generate(decoder, [1, 2, 3], attrs.evolve(config, use_cache=False)))
        assert cached == plain
        assert len(cached) == 20  # 3 + 20 > n_ctx 12: the window slid and stayed consistent


def test_greedy_picks_the_argmax_of_the_full_forward(decoder: tfs.Decoder) -> None:
    prompt = [4, 1, 7]
    [token] = list(generate(decoder, prompt, GenerationConfig(max_new_tokens=1, temperature=0)))
    assert token == int(decoder(torch.tensor([prompt]))[0, -1].argmax())


def test_only_the_last_position_is_unembedded(decoder: tfs.Decoder) -> None:
    """The prompt's other positions need no logits (a long prompt's unembedding is most of
    what reading it costs), with or without a cache; and no forward pass follows the last
    token (three tokens: three passes)."""
    widths: list[int] = []
    with decoder.hooks([("unembed.hook_in", lambda x, hook: widths.append(x.shape[1]))]):
        for use_cache in (True, False):
            config = GenerationConfig(max_new_tokens=3, temperature=0, use_cache=use_cache)
            list(generate(decoder, [4, 1, 7, 2, 9], config))
    assert widths == [1] * 6


def test_generation_runs_in_inference_mode_and_leaves_the_caller_in_grad_mode(
    decoder: tfs.Decoder,
) -> None:
    """Inference mode skips autograd's per-operation bookkeeping (version counters, view
    tracking), which is most of what a generated token costs on a small model; only ints
    leave ``generate``, so no inference tensor reaches the caller's code between tokens."""
    seen: list[bool] = []
    caller: list[bool] = []
    with decoder.hooks(
        [("blocks.0.hook_resid_pre", lambda x, hook: seen.append(x.is_inference()))]
    ):
        for token in generate(decoder, [4, 1, 7], GenerationConfig(max_new_tokens=3)):
            assert isinstance(token, int)
            caller.append(torch.is_grad_enabled() and not torch.is_inference_mode_enabled())
    assert seen == [True] * 3 and caller == [True] * 3


def test_a_seed_makes_sampling_reproducible(decoder: tfs.Decoder) -> None:
    config = GenerationConfig(max_new_tokens=15, temperature=1.5, seed=7)
    assert list(generate(decoder, [1], config)) == list(generate(decoder, [1], config))


def test_generation_stops_at_the_stop_token(decoder: tfs.Decoder) -> None:
    tokens = list(generate(decoder, [1, 2], GenerationConfig(max_new_tokens=10, temperature=0)))
    stop = tokens[2]
    stopped = list(
        generate(
            decoder, [1, 2], GenerationConfig(max_new_tokens=10, temperature=0, stop_token=stop)
        )
    )
    assert stopped == tokens[: tokens.index(stop) + 1]


def test_top_k_and_top_p_keep_only_the_likeliest() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_logits(logits, top_p=0.85)).tolist() == [False, False, False, True]
    assert torch.isinf(filter_logits(logits, top_p=0.9)).tolist() == [False, False, False, True]


def test_a_long_prompt_is_cut_from_the_left() -> None:
    kept, dropped = fit_prompt(list(range(20)), n_ctx=8)
    assert kept == list(range(13, 20)) and dropped == 13


def test_a_prompt_longer_than_the_window_is_refused_by_generate(decoder: tfs.Decoder) -> None:
    with pytest.raises(tfs.TfsError, match="the prompt has 13 tokens; the context window holds 12"):
        list(generate(decoder, list(range(13)), GenerationConfig()))


def test_bad_sampling_options_are_refused() -> None:
    with pytest.raises(tfs.TfsError, match=r"top_p = 1\.5 must be above 0 and at most 1"):
        GenerationConfig(top_p=1.5)
    with pytest.raises(tfs.TfsError, match="top_k = 0 must be at least 1"):
        GenerationConfig(top_k=0)


def test_streamed_bytes_wait_for_whole_characters() -> None:
    from transformer_from_scratch.generation.generate import decode_stream
    from transformer_from_scratch.training.tokenizers import ByteTokenizer

    tokenizer = ByteTokenizer()
    pieces = list(decode_stream(iter(tokenizer.encode("aé✓")), tokenizer.decode))
    assert pieces == ["a", "é", "✓"]
