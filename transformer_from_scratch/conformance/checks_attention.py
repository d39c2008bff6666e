"""Checks of attention modules and kernels: causality, the KV cache, positions, learning."""

from typing import Any

import torch

from transformer_from_scratch.conformance import checks_kernel
from transformer_from_scratch.conformance.checks_common import BATCH, _probe
from transformer_from_scratch.conformance.compare import first_difference, require_finite
from transformer_from_scratch.conformance.probes import probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.conformance.tasks import flagged_copy_accuracy
from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.kinds import PositionalEncoding

LENGTH = 7
CHUNKS = [(0, 3), (3, 4), (4, 5), (5, LENGTH)]
SHIFT = 9  # positions added to every position (LENGTH + SHIFT stays within the tiny n_ctx)
# Position encodings that tell attention only how far apart a query and a key are, with the
# capability an attention module declares to take them.
RELATIVE = (("rotary", "rotary"), ("alibi", "score_bias"))


def check_causal_by_perturbation(subject: Subject) -> None:
    """Changing the input at position j never changes an output before j."""
    p = _probe(subject)
    inputs, noise = p.inputs(BATCH, LENGTH), p.inputs(BATCH, LENGTH, seed=1)
    before = p.run(inputs)
    for j in range(1, LENGTH):
        changed = {name: x.clone() for name, x in inputs.items()}
        for name, x in changed.items():
            dim = p.input_pos_dims[name]
            x.select(dim, j).copy_(noise[name].select(dim, j))
        after = p.run(changed)
        earlier = before.narrow(p.output_pos_dim, 0, j), after.narrow(p.output_pos_dim, 0, j)
        seen = first_difference(*earlier, p.output_pos_dim)
        if seen is not None:
            raise CheckFailed(
                f"position {seen} can see position {j}: changing the input at {j} changed the "
                f"output at {seen}"
            )


def check_causal_by_gradient(subject: Subject) -> None:
    """The output at position i has zero gradient with respect to every later input."""
    p = _probe(subject)
    inputs = {
        k: v.requires_grad_() for k, v in p.inputs(BATCH, LENGTH).items() if v.is_floating_point()
    }
    if not inputs:
        raise NotApplicable(
            "its inputs are token ids, which have no gradient (perturbation covers it)"
        )
    out = p.run(inputs)
    for i in range(LENGTH - 1):
        grads = torch.autograd.grad(
            out.select(p.output_pos_dim, i).sum(),
            list(inputs.values()),
            retain_graph=True,
            allow_unused=True,
        )
        for name, g in zip(inputs, grads, strict=True):
            if g is None:
                continue
            later = g.narrow(p.input_pos_dims[name], i + 1, LENGTH - i - 1).abs()
            if later.max() > 0:
                j = (
                    i
                    + 1
                    + int(
                        later.amax(
                            dim=[d for d in range(g.dim()) if d != p.input_pos_dims[name]]
                        ).nonzero()[0]
                    )
                )
                raise CheckFailed(
                    f"the output at position {i} has a gradient from {name} at position {j}: it "
                    "sees the future"
                )


def check_kv_cache_matches_full_forward(subject: Subject) -> None:
    """Decoding with a cache, a position at a time and in chunks, gives the full pass's outputs
    (for an attention module, with each kind of position it declares: the tiny decoder's own,
    rotary turns and ALiBi's score bias)."""
    if not subject.has("kv_cache"):
        raise NotApplicable(
            "it does not declare 'kv_cache'; decoding falls back to recomputing the prefix"
        )
    if subject.kind == "attention_kernel":
        return checks_kernel.kernel_cache_matches_full_forward(subject)
    positionals = [None] + [name for name, capability in RELATIVE if subject.has(capability)]
    for positional in positionals:
        _attention_cache_matches(subject, positional)


def _attention_cache_matches(subject: Subject, positional: str | None) -> None:
    # Moved parameters: a bias left out of the cached path shows.
    changes: dict[str, Any] = {} if positional is None else {"positional": positional}
    p = probe(subject, subject.moved_decoder(**changes).eval())
    x = p.inputs(BATCH, LENGTH)["residual"]
    full = require_finite(
        p.owner(x, positional=p.decoder.positional, positions=torch.arange(LENGTH))
    )
    steps = [(t, t + 1) for t in range(LENGTH)]
    for how, chunks in (("one position at a time", steps), ("in chunks", CHUNKS)):
        cache, pieces = LayerCache(), []
        for start, stop in chunks:
            pieces.append(
                p.owner(
                    x[:, start:stop],
                    positional=p.decoder.positional,
                    positions=torch.arange(start, stop),
                    cache=cache,
                )
            )
        with_what = how if positional is None else f"{how} (with {positional} positions)"
        checks_kernel.compare_cached(torch.cat(pieces, dim=1), full, pos_dim=1, how=with_what)


def _positional_effect(subject: Subject, positional_name: str) -> float:
    """How much (relative to its size) the output moves when ``positional_name`` is used (with
    parameters moved: an output projection that starts at zero hides every input)."""
    p = probe(subject, subject.moved_decoder(positional=positional_name).eval())
    x = p.inputs(BATCH, LENGTH)["residual"]
    pos = torch.arange(LENGTH)
    with torch.no_grad():
        used = p.owner(x, positional=p.decoder.positional, positions=pos)
        neutral = p.owner(x, positional=PositionalEncoding(), positions=pos)
    return float((used - neutral).abs().max() / neutral.abs().max().clamp_min(1e-12))


def check_score_bias_changes_output(subject: Subject) -> None:
    """A declared score bias (ALiBi's, or any) changes the output: it is not dropped."""
    if not subject.has("score_bias"):
        raise NotApplicable("it does not declare 'score_bias'")
    if subject.options.get("window") == 1:
        raise NotApplicable("with a window of one key, each query's weight is 1 whatever the bias")
    if subject.kind == "attention":
        effect = _positional_effect(subject, "alibi")
    elif subject.kind == "attention_kernel":
        kernel = _probe(subject).owner
        generator = torch.Generator().manual_seed(0)
        heads, width = subject.sizes["n_heads"], subject.sizes["d_head"]
        q, k, v = (torch.randn(2, heads, LENGTH, width, generator=generator) for _ in range(3))
        bias = 3 * torch.randn(heads, LENGTH, LENGTH, generator=generator)
        pos = torch.arange(LENGTH)
        with_bias = kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=bias)
        without = kernel(q, k, v, query_positions=pos, key_positions=pos)
        effect = float((with_bias - without).abs().max() / without.abs().max())
    else:
        raise NotApplicable("score biases are taken by attention modules and kernels")
    if not effect > 1e-3:
        raise CheckFailed(
            "it declares 'score_bias' but a score bias does not change its output: is the bias "
            "ignored (or not passed on to the kernel)?"
        )


def check_rotation_changes_output(subject: Subject) -> None:
    """Attention declaring 'rotary' applies the rotation: rotary changes its output."""
    if subject.kind != "attention" or not subject.has("rotary"):
        raise NotApplicable("only attention modules declaring 'rotary' rotate queries and keys")
    if not _positional_effect(subject, "rotary") > 1e-3:
        raise CheckFailed(
            "it declares 'rotary' but rotating queries and keys does not change its output: is "
            "positional.rotate() called on them?"
        )


def check_shift_invariant(subject: Subject) -> None:
    """With rotary positions (or ALiBi's bias), shifting every position by the same amount
    leaves its output unchanged: they tell it only how far apart a query and a key are.

    RoPE's point (Su et al. 2021, §3.4.2) is that the score of a query at ``m`` and a key at
    ``n`` depends on ``m - n`` alone, as ALiBi's bias does. That holds only if both queries and
    keys are turned by the same positions, and nothing else is (not the values)."""
    relative = [name for name, capability in RELATIVE if subject.has(capability)]
    if subject.kind != "attention" or not relative:
        raise NotApplicable("only attention modules declaring 'rotary' or 'score_bias' take them")
    for name in relative:
        p = probe(subject, subject.moved_decoder(positional=name).eval())
        x = p.inputs(BATCH, LENGTH)["residual"]
        positional = p.decoder.positional
        with torch.no_grad():
            outputs = [p.owner(x, positional=positional, positions=torch.arange(LENGTH) + shift)
                       for shift in (0, SHIFT)]  # fmt: skip
        diff = (outputs[1] - outputs[0]).abs().max().item()
        if not diff <= 1e-5 * (1.0 + outputs[0].abs().max().item()):
            raise CheckFailed(
                f"with {name} positions, shifting every position by {SHIFT} changed its output "
                f"by {diff:.3g}: {name} tells attention only how far apart a query and a key "
                "are. Are queries and keys both turned, by the same positions, and nothing "
                "else (not the values)?"
            )


def check_learns_flagged_copy(subject: Subject) -> None:
    """Trained briefly, it moves 1.2x a flagged token's vector to the last position (> 90%)."""
    if subject.kind != "attention":
        raise NotApplicable("a learning check for attention modules")
    decoder = subject.decoder()
    attention = subject.module(decoder)
    score = flagged_copy_accuracy(
        attention, decoder.positional, decoder.spec.d_model, seed=subject.seed
    )
    if score < 0.9:
        raise CheckFailed(
            f"after training, only {score:.0%} of held-out cases copy the flagged vector within "
            "tolerance (needs 90%): attention is not moving information between positions"
        )
