"""Hook points: every name a kind owes fires, with its layout, and is live.

Checked on a whole tiny decoder holding the implementation, so what is proved is what a user of
``run_with_cache`` / ``run_with_hooks`` gets: each hook point its kind's contract names
(``core/kinds.py``) and each the decoder fires around the parts exists, fires once per forward
pass with the documented shape, caching does not change the logits, and a replacement is used
(a hook on a copy, or on a value the component then ignores, is caught).
"""

from collections.abc import Mapping

import torch
from torch import Tensor

from transformer_from_scratch.conformance.compare import require_finite
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.hooks import HookPoint, hook_name
from transformer_from_scratch.core.kinds import DECODER_HOOKS, KINDS

BATCH, LENGTH = 2, 6
ATOL = 1e-5


def _run(subject: Subject) -> tuple[Decoder, Tensor]:
    # Parameters moved: behind a projection that starts at zero, no hook would change anything.
    decoder = subject.moved_decoder().eval()
    tokens = torch.randint(0, decoder.spec.d_vocab, (BATCH, LENGTH),
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    return decoder, tokens


def owed(subject: Subject, decoder: Decoder) -> dict[str, str]:
    """The hook names the implementation owes in ``decoder``, with the layout of each."""
    paths = {id(module): hook_name(path) for path, module in decoder.named_modules()}
    leaves = dict(KINDS[subject.kind].hooks)
    if subject.kind == "block" and not subject.has("resid_mid"):
        leaves.pop("hook_resid_mid", None)
    names: dict[str, str] = {}
    for entry, module in decoder.parts:
        if entry.id != subject.entry.id or id(module) not in paths:
            continue
        for leaf, layout in leaves.items():
            name = f"{paths[id(module)]}.{leaf}"
            if name not in decoder._hook_gaps:
                names[name] = layout
    return names


def _decoder_owed(decoder: Decoder) -> dict[str, str]:
    names: dict[str, str] = {}
    additive = any(
        e.kind == "positional" and "additive" in e.capabilities for e, _ in decoder.parts
    )
    blocks = [e for e, _ in decoder.parts if e.kind == "block"]
    for pattern, layout in DECODER_HOOKS.items():
        if pattern == "hook_pos_embed" and not additive:
            continue
        for i in range(len(decoder.blocks)) if "{i}" in pattern else [0]:
            if pattern.endswith("hook_mlp_out") and "attention_only" in blocks[i].capabilities:
                continue
            names[pattern.format(i=i)] = layout
    return names


def _sizes(decoder: Decoder) -> dict[str, int]:
    d = decoder.spec.dims
    return {"batch": BATCH, "pos": LENGTH, "query_pos": LENGTH, "key_pos": LENGTH,
            "head": d.n_heads, "kv_head": d.n_kv_heads, "d_head": d.d_head, "d_mlp": d.d_mlp,
            "d_model": d.d_model, "d_vocab": d.d_vocab, "1": 1}  # fmt: skip


def check_hooks_fire(subject: Subject) -> None:
    """Each hook point its kind owes (and the decoder's own) fires once, with its layout."""
    decoder, tokens = _run(subject)
    expected = {**_decoder_owed(decoder), **owed(subject, decoder)}
    _require_present(decoder, expected, subject.kind)
    fired: dict[str, list[tuple[int, ...]]] = {name: [] for name in decoder.hook_points()}
    seen: list[tuple[str, Tensor, Tensor]] = []

    def record(activation: Tensor, hook: HookPoint) -> None:
        fired[hook.name].append(tuple(activation.shape))
        seen.append((hook.name, activation, activation.clone()))

    with torch.no_grad():
        plain = decoder(tokens)
        with decoder.hooks([(lambda name: True, record)]):  # all of them: caching everything
            hooked = require_finite(decoder(tokens), "the logits with every hook listened to")
    _require_each_fired(fired, expected, _sizes(decoder), subject.kind)
    _require_untouched_after(seen)
    if not torch.allclose(hooked, plain, atol=ATOL, rtol=ATOL):
        diff = (hooked - plain).abs().max().item()
        raise CheckFailed(
            f"listening at every hook point changed the logits by {diff:.3g}: reading an "
            "activation must not change the model (does the written-out path a hook needs — a "
            "norm's scale, attention's pattern — compute the same thing, with the same window?)"
        )


def _require_untouched_after(seen: list[tuple[str, Tensor, Tensor]]) -> None:
    """No activation is changed in place after its hook point passed it on: run_with_cache
    keeps that very tensor (as TransformerLens does), and so does any patch or probe."""
    for name, activation, copy in seen:
        if not torch.equal(activation, copy):
            diff = (activation.double() - copy.double()).abs().max().item()
            raise CheckFailed(
                f"the activation at {name} was changed in place (by up to {diff:.3g}) after its "
                "hook point passed it on, so a cache (run_with_cache) shows values the model "
                "never had there; compute the next step into a new tensor (torch.relu(x), not "
                "torch.relu_(x) or x += ...)"
            )


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _require_present(decoder: Decoder, expected: dict[str, str], kind: str) -> None:
    missing = sorted(set(expected) - set(decoder.hook_points()))
    if missing:
        raise CheckFailed(
            f"it has no hook point {missing[0]} (kind {kind} owes "
            f"{', '.join(KINDS[kind].hooks)}): make `self.{_leaf(missing[0])} = HookPoint()` "
            f"in __init__ and pass the activation through it in forward ({len(missing)} "
            f"missing: {', '.join(missing[:4])})"
        )


def _require_each_fired(
    fired: dict[str, list[tuple[int, ...]]], expected: dict[str, str], sizes: dict[str, int],
    kind: str,
) -> None:  # fmt: skip
    for name, layout in expected.items():
        shapes = fired[name]
        want = tuple(sizes[dim] for dim in layout.split())
        if not shapes:
            raise CheckFailed(
                f"{name} never fired: does forward call it on the activation "
                f"(`x = self.{_leaf(name)}(x)`)?"
            )
        if len(shapes) > 1:
            raise CheckFailed(f"{name} fired {len(shapes)} times in one forward pass, not once")
        if shapes[0] != want:
            raise CheckFailed(
                f"{name} showed shape {shapes[0]}, but kind {kind}'s contract says [{layout}] "
                f"= {want}"
            )


def check_hooks_are_live(subject: Subject) -> None:
    """A hook's replacement is what the model goes on with; returning the value changes nothing."""
    decoder, tokens = _run(subject)
    names = owed(subject, decoder)
    if not names:
        raise NotApplicable(
            f"kind {subject.kind} owes no hook points of its own (the decoder fires the ones "
            "around it)"
        )
    _require_present(decoder, names, subject.kind)
    with torch.no_grad():
        for name in sorted(names):
            _require_live(decoder, tokens, name)


def _require_live(decoder: Decoder, tokens: Tensor, name: str) -> None:
    def same(activation: Tensor, hook: HookPoint) -> Tensor:
        return activation

    def changed(activation: Tensor, hook: HookPoint) -> Tensor:
        return activation * 1.5 + 0.25

    def read(activation: Tensor, hook: HookPoint) -> None:
        return None

    base = decoder.run_with_hooks(tokens, [(name, read)])
    kept = decoder.run_with_hooks(tokens, [(name, same)])
    if not torch.equal(kept, base):
        raise CheckFailed(f"returning {name}'s own value from a hook changed the logits")
    moved = decoder.run_with_hooks(tokens, [(name, changed)])
    if torch.allclose(moved, base, atol=1e-6, rtol=0):
        raise CheckFailed(
            f"replacing {name} (x -> 1.5x + 0.25) did not change the logits: the hook is not "
            f"live. Does forward go on with what the hook returns (`x = self.{_leaf(name)}(x)`), "
            "not with a copy or the value it had before?"
        )


def check_activations_belong_to_the_run(subject: Subject) -> None:
    """The activations hooks see belong to their run: a hook changing one in place, as
    patching code does (``act[:, 3] = ...``), changes that run as returning the change would
    and nothing after it, and a ``run_with_cache`` cache stays as it was when the model runs
    again.

    Every hook point of the decoder holding it is tried, so the tensors it hands on (its
    output, which the decoder or its owner passes to a hook) are covered too. A view of a
    weight, a position table or a reused output buffer would be written into by the patch, or
    overwritten under the cache by the next run: clean and corrupted caches would then agree."""
    decoder, tokens = _run(subject)
    with torch.no_grad():
        base = decoder(tokens)
        for name in decoder.hook_points():
            _require_patch_stays_in_run(decoder, tokens, name, base)
        _require_cache_outlives_run(decoder, tokens)


def _require_patch_stays_in_run(decoder: Decoder, tokens: Tensor, name: str, base: Tensor) -> None:
    def in_place(activation: Tensor, hook: HookPoint) -> None:
        activation.mul_(1.5).add_(0.25)

    def returned(activation: Tensor, hook: HookPoint) -> Tensor:
        return activation * 1.5 + 0.25

    try:
        patched = decoder.run_with_hooks(tokens, [(name, in_place)])
    except RuntimeError as exc:
        raise CheckFailed(
            f"a hook changing {name} in place (as activation patching does) raised: {exc}. "
            "Hand hooks a tensor of their own (an expanded or read-only view cannot be written)"
        ) from exc
    after = decoder(tokens)
    if not torch.equal(after, base):
        raise CheckFailed(
            f"after a hook changed {name} in place, the next run's logits differ by "
            f"{(after - base).abs().max().item():.3g}: the model itself was changed. Is that "
            "activation a view of a parameter or buffer (a slice of a table, `weight[:n]`)? "
            "Index with the positions (`weight[positions]` copies) or clone before the hook"
        )
    expected = decoder.run_with_hooks(tokens, [(name, returned)])
    if not torch.allclose(patched, expected, atol=1e-6, rtol=1e-5):
        raise CheckFailed(
            f"changing {name} in place in a hook gave other logits than returning the same "
            "change: does forward go on with the tensor the hook was given?"
        )


def _require_cache_outlives_run(decoder: Decoder, tokens: Tensor) -> None:
    """A cache taken on one input is unchanged after a run on another."""
    _, cache = decoder.run_with_cache(tokens)
    kept = {name: value.clone() for name, value in cache.items()}
    decoder.run_with_cache(torch.roll(tokens, 1, dims=1).flip(0))
    for name, before in kept.items():
        if not torch.equal(cache[name], before):
            raise CheckFailed(
                f"run_with_cache's {name} changed when the model ran again on other tokens: the "
                "activation is a view of something the model reuses (a preallocated output "
                "buffer?). Return a new tensor each call"
            )


def check_pattern_is_a_distribution(subject: Subject) -> None:
    """An exact kernel's attention pattern is causal, each query's row sums to 1, and the
    attention hooks agree as TransformerLens' do: the pattern is the softmax of
    ``hook_attn_scores`` (scaled, biased and masked already), and ``hook_z`` is the pattern
    times ``hook_v`` (each query head reading its key/value head)."""
    decoder, tokens = _run(subject)
    names = [n for n in decoder.hook_points() if n.endswith("attn.hook_pattern")]
    if not names:
        raise NotApplicable("no attention pattern here: the kernel is approximate")
    _, cache = decoder.run_with_cache(tokens)
    for name in names:
        pattern = cache[name].float()
        later = torch.triu(torch.ones(LENGTH, LENGTH, dtype=torch.bool), diagonal=1)
        if pattern[..., later].abs().max() > 0:
            raise CheckFailed(f"{name} gives weight to a later key: the pattern is not causal")
        sums = pattern.sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
            raise CheckFailed(f"{name}'s rows sum to {sums.min():.4g}..{sums.max():.4g}, not 1")
        _require_hooks_agree(cache, name.removesuffix("hook_pattern"), pattern)


def _require_hooks_agree(cache: Mapping[str, Tensor], prefix: str, pattern: Tensor) -> None:
    scores = cache.get(f"{prefix}hook_attn_scores")
    if scores is not None:
        diff = (torch.softmax(scores.float(), dim=-1) - pattern).abs().max().item()
        if not diff <= 1e-5:
            raise CheckFailed(
                f"{prefix}hook_pattern is not the softmax of {prefix}hook_attn_scores (off by "
                f"{diff:.3g}): the scores hook must hold what the softmax reads, already scaled "
                "by 1/sqrt(d_head), with any score bias added and the mask applied"
            )
    values, z = cache.get(f"{prefix}hook_v"), cache.get(f"{prefix}hook_z")
    if values is None or z is None:
        return
    group = z.shape[2] // values.shape[2]  # [batch pos head d_head], query heads per KV head
    shared = values.float().repeat_interleave(group, dim=2)
    expected = torch.einsum("bhqk,bkhd->bqhd", pattern, shared)
    diff = (expected - z.float()).abs().max().item()
    if not diff <= 1e-5 * (1.0 + expected.abs().max().item()):
        raise CheckFailed(
            f"{prefix}hook_z is not {prefix}hook_pattern times {prefix}hook_v (off by "
            f"{diff:.3g}): z holds each head's mix of values, [batch pos head d_head], before "
            "the output projection, and query head h reads key/value head h // (n_heads / "
            "n_kv_heads), as Llama's and TransformerLens' grouped heads do (repeat_interleave, "
            "not repeat)"
        )
