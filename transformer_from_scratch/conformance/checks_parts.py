"""Checks of embeddings, unembeddings, norms, MLPs and blocks."""

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
