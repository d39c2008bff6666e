"""Checks that a norm's and an MLP's hook points hold what TransformerLens' do.

The hook checks (``checks_hooks.py``) prove that each hook point fires with its layout and is
live. A hook on the wrong tensor passes them: ``hook_scale`` on the variance instead of its
root, ``hook_post`` before the activation. Here what each hook holds is tied to the others and
to the part's input and output, with relations that hold whatever the formulas inside.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_from_scratch.conformance.checks_parts import _norm_input
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.hooks import HookPoint


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
    normalized, scale = _fired(seen, "hook_normalized"), _fired(seen, "hook_scale")
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
    return _fired(seen, "it")


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


def _fired(seen: dict[str, Tensor], name: str) -> Tensor:
    if name not in seen:
        raise CheckFailed(f"{name} did not fire in a forward pass while a hook listened to it")
    return seen[name]


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
