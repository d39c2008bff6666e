"""A learning test a learner would recognise: a two-layer attention-only model trained on
repeated random tokens forms induction heads, and the tooling finds them."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.interp.induction import (
    induction_scores,
    previous_token_scores,
    repeated_tokens,
)

VOCAB, HALF = 32, 12


def _trained() -> tfs.Decoder:
    torch.manual_seed(0)
    spec = tfs.DecoderSpec.from_dict({
        "d_model": 64, "n_layers": 2, "n_heads": 2, "d_head": 32, "d_mlp": 64, "d_vocab": VOCAB,
        "n_ctx": 2 * HALF,
        "components": {"block": "attention_only", "positional": "rotary", "unembedding": "untied"},
    })  # fmt: skip
    decoder = tfs.build_decoder(spec)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(250):
        tokens = repeated_tokens(64, HALF, VOCAB, generator)
        logits = decoder(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.eval()


def test_an_attention_only_model_forms_induction_heads_and_the_tooling_finds_them() -> None:
    decoder = _trained()
    tokens = repeated_tokens(128, HALF, VOCAB, torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = decoder(tokens[:, :-1])
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tokens[:, 1:], reduction="none"
        ).mean(0)
    first, repeated = losses[: HALF - 1].mean(), losses[HALF:].mean()
    assert first > 3.0 and repeated < 0.2, (
        first,
        repeated,
    )  # ln 32 = 3.47: the first half is noise
    scores = induction_scores(decoder, tokens)  # [layer head]
    best = scores.flatten().argmax()
    layer = int(best) // scores.shape[1]
    assert layer == 1, f"the best induction head is in layer {layer}: it needs a layer before it"
    assert scores[1].min() > 0.8, scores  # both second-layer heads complete the pattern
    assert scores[0].max() < 0.3, scores  # the first layer cannot: nothing has moved tokens yet
    assert previous_token_scores(decoder, tokens).shape == scores.shape
