"""Checks of embeddings, unembeddings, norms, MLPs and blocks."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject, move_off_init
from transformer_from_scratch.conformance.tasks import bigram_accuracy, xor_accuracy
from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.kinds import PositionalEncoding


def check_learns_bigrams(subject: Subject) -> None:
    """With the other end of the direct path, it learns "next token = this token + 1" (> 90%)."""
    if subject.kind == "unembedding" and subject.has("tied"):
        raise NotApplicable(
            "a tied unembedding makes W_E W_E^T symmetric, which cannot hold 'next integer' "
            "(sharing is checked instead)"
        )
    decoder = subject.decoder()
    dims = decoder.spec.dims
    embedding, unembedding = decoder.embedding, decoder.unembedding
    if subject.kind == "embedding":
        unembedding = subject.registry.get("unembedding", "untied").factory(
            dims, embedding=embedding
        )
    score = bigram_accuracy(embedding, unembedding, dims.d_vocab, seed=subject.seed)
    if score < 0.9:
        raise CheckFailed(
            f"embed + unembed reach only {score:.0%} on next-integer bigrams (needs 90%)"
        )


def check_tied_shares_tensor(subject: Subject) -> None:
    """A tied unembedding shares the embedding's weight tensor itself, not a copy."""
    if not subject.has("tied"):
        raise NotApplicable("it does not declare 'tied'")
    decoder = subject.decoder()
    embedded = {p.data_ptr() for p in decoder.embedding.parameters()}
    shared = [n for n, p in decoder.unembedding.named_parameters() if p.data_ptr() in embedded]
    if not shared:
        raise CheckFailed(
            "it declares 'tied' but none of its parameters is the embedding's tensor: it copies "
            "instead of sharing, so the two ends drift apart in training"
        )


def _norm_input(subject: Subject) -> Tensor:
    width = subject.sizes["d_model"]
    return 3.0 + 5.0 * torch.randn(4, 6, width, generator=torch.Generator().manual_seed(0))


def check_normalises(subject: Subject) -> None:
    """At initialisation each output vector has the statistics it declares (mean 0, RMS 1)."""
    if not (subject.has("zero_mean") or subject.has("unit_rms")):
        raise NotApplicable("it declares neither 'zero_mean' nor 'unit_rms'")
    out = subject.module(subject.decoder())(_norm_input(subject))
    if subject.has("zero_mean"):
        worst = out.mean(-1).abs().max().item()
        if worst > 1e-4:
            raise CheckFailed(
                f"an output vector has mean {worst:.3g}, not 0: is it normalising over the wrong "
                "axis?"
            )
    if subject.has("unit_rms"):
        rms = out.pow(2).mean(-1).sqrt()
        worst = (rms - 1).abs().max().item()
        if worst > 1e-2:
            raise CheckFailed(
                f"an output vector has root mean square off 1 by {worst:.3g}: is it normalising "
                "over the wrong axis?"
            )


def check_norm_hooks_agree(subject: Subject) -> None:
    """Its hooks hold what TransformerLens' do: ``hook_normalized`` the normalised vector,
    before gain and bias (with the statistics it declares), ``hook_scale`` the number each
    input vector was divided by (its centred input is normalized x scale), and the output is
    the normalised vector times a gain plus a bias, feature by feature.

    Checked with gain and bias moved off 1 and 0 (at initialisation a hook after the gain holds
    the same numbers). A hook on the variance instead of its root, or on the vector after the
    gain, is live and passes the hook checks, but a user dividing by the scale or reading the
    normalised stream gets something else."""
    norm, x = subject.module(subject.moved_decoder()), _norm_input(subject)
    points = {name: getattr(norm, name, None) for name in ("hook_scale", "hook_normalized")}
    if not all(isinstance(point, HookPoint) for point in points.values()):
        raise NotApplicable("it has no hook_scale and hook_normalized (check_hooks_fire asks)")
    seen: dict[str, Tensor] = {}
    for name, point in points.items():
        assert isinstance(point, HookPoint)
        point.add(_keeper(seen, name))
    with torch.no_grad():
        out = norm(x)
    normalized, scale = seen["hook_normalized"], seen["hook_scale"]
    centred = x - x.mean(-1, keepdim=True) if subject.has("zero_mean") else x
    _require_close(normalized * scale, centred, "hook_normalized x hook_scale", "the input" + (
        " less its mean" if subject.has("zero_mean") else ""))  # fmt: skip
    if subject.has("unit_rms"):
        rms = normalized.pow(2).mean(-1).sqrt()
        _require_close(rms, torch.ones_like(rms), "hook_normalized's root mean square", "1", 1e-2)
    _require_affine_per_feature(normalized, out)


def check_mlp_hooks_agree(subject: Subject) -> None:
    """Its hooks hold what TransformerLens' do: ``hook_pre`` the pre-activations, an affine
    function of its input (``x W_in + b_in``), and ``hook_post`` the activations its output
    projection reads, so the output is an affine function of them (``post W_out + b_out``).

    A hook on the wrong side of the activation is live and passes the hook checks, but every
    neuron a user reads or patches there is something else. Checked by midpoints: the value at
    the midpoint of two inputs (or of two patched activations) is the midpoint of the values."""
    mlp = subject.module(subject.moved_decoder().eval())
    points = {name: getattr(mlp, name, None) for name in ("hook_pre", "hook_post")}
    if not all(isinstance(point, HookPoint) for point in points.values()):
        raise NotApplicable("it has no hook_pre and hook_post (check_hooks_fire asks)")
    generator = torch.Generator().manual_seed(0)
    width = subject.sizes["d_model"]
    x1, x2 = (torch.randn(2, 5, width, generator=generator) for _ in range(2))
    pre_hook, post_hook = points["hook_pre"], points["hook_post"]
    assert isinstance(pre_hook, HookPoint) and isinstance(post_hook, HookPoint)
    with torch.no_grad():
        pres = [_seen_at(mlp, pre_hook, x) for x in (x1, x2, (x1 + x2) / 2)]
        _require_midpoint(pres, "hook_pre", "its input", "x W_in + b_in, before the activation")
        post = _seen_at(mlp, post_hook, x1)
        r1, r2 = (torch.randn(post.shape, generator=generator) for _ in range(2))
        outs = [_patched(mlp, post_hook, x1, r) for r in (r1, r2, (r1 + r2) / 2)]
        _require_midpoint(
            outs, "the output", "hook_post", "post W_out + b_out, after the activation"
        )


def _seen_at(module: nn.Module, point: HookPoint, x: Tensor) -> Tensor:
    seen: dict[str, Tensor] = {}
    keep = _keeper(seen, "it")
    point.add(keep)
    try:
        module(x)
    finally:
        point.remove(keep)
    return seen["it"]


def _patched(module: nn.Module, point: HookPoint, x: Tensor, value: Tensor) -> Tensor:
    def replace(activation: Tensor, hook: HookPoint) -> Tensor:
        return value

    point.add(replace)
    try:
        out: Tensor = module(x)
    finally:
        point.remove(replace)
    return out


def _require_midpoint(values: list[Tensor], what: str, of: str, formula: str) -> None:
    first, second, middle = values
    diff = (middle - (first + second) / 2).abs().max().item()
    if not diff <= 1e-4 * (1.0 + middle.abs().max().item()):
        raise CheckFailed(
            f"{what} is not an affine function of {of} (at the midpoint it is off by {diff:.3g}): "
            f"it should be {formula}. Is the hook on the other side of the activation?"
        )


def _keeper(seen: dict[str, Tensor], name: str) -> Callable[[Tensor, HookPoint], None]:
    """A hook keeping a copy of the first activation it sees in ``seen[name]``."""

    def keep(activation: Tensor, hook: HookPoint) -> None:
        seen.setdefault(name, activation.clone())

    return keep


def _require_close(
    got: Tensor, expected: Tensor, what: str, should: str, tolerance: float = 1e-4
) -> None:
    diff = (got - expected).abs().max().item()
    if not diff <= tolerance * (1.0 + expected.abs().max().item()):
        raise CheckFailed(
            f"{what} is off {should} by {diff:.3g}: hook_scale holds what each vector is divided "
            "by (sqrt(var + eps), not the variance) and hook_normalized the vector divided by it, "
            "before any gain or bias"
        )


def _require_affine_per_feature(normalized: Tensor, out: Tensor) -> None:
    """Each output feature is a x (that feature of hook_normalized) + c, the same a and c at
    every position (a least-squares fit over all of them leaves nothing over)."""
    n, y = normalized.reshape(-1, normalized.shape[-1]), out.reshape(-1, out.shape[-1])
    n_centred, y_centred = n - n.mean(0), y - y.mean(0)
    gain = (n_centred * y_centred).sum(0) / n_centred.pow(2).sum(0).clamp_min(1e-12)
    left = (y_centred - gain * n_centred).abs().max().item()
    if not left <= 1e-4 * (1.0 + y.abs().max().item()):
        raise CheckFailed(
            f"the output is not hook_normalized times a gain plus a bias, feature by feature "
            f"(off by {left:.3g}): is hook_normalized fired after the gain, or on something the "
            "output does not come from?"
        )


def check_norm_invariances(subject: Subject) -> None:
    """Scaling (and, if declared, shifting) an input vector leaves its output unchanged.

    Shifts go up to 1000 (200 times the input's spread): trained residual streams carry
    offsets that large, where float32 keeps the variance only if it is taken about the mean
    (``mean((x - mean)^2)``, not ``mean(x^2) - mean^2``, which loses it to rounding)."""
    wanted = [c for c in ("scale_invariant", "shift_invariant") if subject.has(c)]
    if not wanted:
        raise NotApplicable("it declares no invariance")
    # With gain and bias moved off 1 and 0: one applied before normalising breaks an invariance
    norm, x = subject.module(subject.moved_decoder()), _norm_input(subject)
    moved = {  # (what, input, tolerance: float32's rounding of the moved input, with room)
        "scale_invariant": [("scaling by 7", x * 7.0, 1e-4)],
        "shift_invariant": [("adding 2.5", x + 2.5, 1e-4), ("adding 1000", x + 1000.0, 1e-3)],
    }
    for capability in wanted:
        for label, changed, tolerance in moved[capability]:
            diff = (norm(changed) - norm(x)).abs().max().item()
            if not diff <= tolerance:  # (NaN fails too)
                raise CheckFailed(
                    f"{label} changed the output by {diff:.3g}, though it declares "
                    f"'{capability}'" + (_CANCELLATION if label == "adding 1000" else _ORDER)
                )


_ORDER = (
    " (with its gain and bias moved off 1 and 0, as training moves them): is the gain or the "
    "bias applied before normalising? They come after"
)
_CANCELLATION = (
    ": is the variance taken as mean(x^2) - mean(x)^2? At large offsets float32 rounds it "
    "away; take mean((x - mean)^2)"
)


def check_learns_nonlinear(subject: Subject) -> None:
    """Trained briefly, it fits x0 * x1 on {-1, 1}^2 (XOR in signs), which no linear map can."""
    decoder = subject.decoder()
    score = xor_accuracy(subject.module(decoder), decoder.spec.d_model, seed=subject.seed)
    if score < 1.0:
        raise CheckFailed(
            f"it fits only {score:.0%} of the four XOR cases: is there a non-linearity between "
            "the two layers?"
        )


class _Constant(nn.Module):
    """A stand-in sublayer that ignores its input and returns a fixed vector (zero by default)."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(
        self,
        residual: Tensor,
        *,
        positional: PositionalEncoding | None = None,
        positions: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        return residual * 0 + self.value


def _block_output(
    subject: Subject,
    attention: Tensor,
    mlp: Tensor,
    x: Tensor,
    moved: bool = False,
    seen: list[Tensor] | None = None,
) -> Tensor:
    """The block's output with stand-in sublayers writing ``attention`` and ``mlp``; what its
    ``hook_resid_mid`` saw is appended to ``seen`` when given."""
    decoder = subject.decoder()
    dims = decoder.spec.dims
    norm = subject.registry.get("norm", "layer_norm").factory
    block = subject.entry.factory(dims, attention=_Constant(attention), mlp=_Constant(mlp),
                                  make_norm=lambda: norm(dims), **subject.options)  # fmt: skip
    if moved:  # off their initial values: a gate that starts at 0 (ReZero) opens
        move_off_init(block, seed=7)
    point = getattr(block, "hook_resid_mid", None)
    if seen is not None and isinstance(point, HookPoint):
        point.add(lambda activation, hook: seen.append(activation.clone()))
    out: Tensor = block(x, positional=decoder.positional, positions=torch.arange(x.shape[1]))
    return out


def check_block_identity_path(subject: Subject) -> None:
    """With sublayers that output zero, the block returns the residual stream unchanged."""
    if not subject.has("identity_path"):
        raise NotApplicable(
            "it does not declare 'identity_path' (post-norm normalises the stream itself)"
        )
    width = subject.sizes["d_model"]
    x = torch.randn(2, 5, width, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(width)
    diff = (_block_output(subject, zero, zero, x) - x).abs().max().item()
    if diff > 1e-6:
        raise CheckFailed(
            f"with zero sublayer outputs the stream changed by {diff:.3g}: the residual path is "
            "not an identity"
        )


def check_resid_mid_between_sublayers(subject: Subject) -> None:
    """``hook_resid_mid`` holds the residual stream itself, after attention has added to it
    and before the MLP does: with the attention silent it is the block's input, and with the
    MLP silent it is the block's output.

    Patching ``resid_mid`` (TransformerLens' name) replaces the stream between the sublayers;
    a hook on the MLP's normalised input, or on the stream before attention has written, is
    live but holds something else, and every patching or logit-lens result read there is
    wrong."""
    if not (subject.has("resid_mid") and subject.has("identity_path")):
        raise NotApplicable(
            "it does not declare both 'resid_mid' and 'identity_path' (a parallel block has no "
            "stream between its sublayers; a post-norm block normalises it)"
        )
    generator = torch.Generator().manual_seed(0)
    width = subject.sizes["d_model"]
    x = torch.randn(2, 5, width, generator=generator)
    zero, some = torch.zeros(width), torch.randn(width, generator=generator)
    with torch.no_grad():
        before: list[Tensor] = []
        _block_output(subject, zero, some, x, seen=before)
        after: list[Tensor] = []
        out = _block_output(subject, some, zero, x, seen=after)
    if len(before) != 1 or len(after) != 1:
        raise CheckFailed(f"hook_resid_mid fired {len(before)} times in one forward pass, not once")
    for label, mid, expected in (("attention", before[0], x), ("MLP", after[0], out)):
        diff = (mid - expected).abs().max().item()
        if not diff <= 1e-6 * (1.0 + expected.abs().max().item()):
            where = "input" if label == "attention" else "output"
            raise CheckFailed(
                f"with the {label} writing nothing, hook_resid_mid differs from the block's "
                f"{where} by {diff:.3g}: it must hold the residual stream itself between the "
                "sublayers (x + attention's output), not a normalised copy or the stream before "
                "attention has written"
            )


def check_block_uses_both_sublayers(subject: Subject) -> None:
    """What attention writes and what the MLP writes both reach the block's output."""
    generator = torch.Generator().manual_seed(0)
    width = subject.sizes["d_model"]
    x = torch.randn(2, 5, width, generator=generator)
    zero, some = torch.zeros(width), torch.randn(width, generator=generator)
    base = _block_output(subject, zero, zero, x, moved=True)
    sublayers = [("attention", _block_output(subject, some, zero, x, moved=True))]
    if not subject.has("attention_only"):  # it has no MLP to use
        sublayers.append(("MLP", _block_output(subject, zero, some, x, moved=True)))
    for name, out in sublayers:
        if torch.allclose(out, base, atol=1e-6):
            raise CheckFailed(
                f"changing what the {name} writes does not change the block's output: its output "
                "is not added to the residual stream"
            )
