"""Hook points: named places in a model where a person may read or replace an activation.

A :class:`HookPoint` is an identity with a name. A component calls it on an activation it owes
(``q = self.hook_q(q)``); with nobody listening, the call returns its argument after one
attribute test, so an un-hooked model computes exactly what it did before. Listeners are
functions ``fn(activation, hook)``; one may return a replacement, which the component then uses:
the hook is live, not a copy.

Names follow TransformerLens (``blocks.0.attn.hook_pattern``), so its users' code carries over:
a hook point's name is its module path with the decoder's attribute names put as TransformerLens
spells them (:data:`ALIASES`). Which names each kind owes is part of its contract
(``core/kinds.py``); the decoder adds the ones around every part (:func:`attach`).
"""

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from transformer_from_scratch.core.errors import TfsError

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]

# Module attribute names as TransformerLens spells them in hook names.
ALIASES = {
    "embedding": "embed",
    "attention": "attn",
    "norm_attention": "ln1",
    "norm_mlp": "ln2",
    "final_norm": "ln_final",
    "unembedding": "unembed",
}


class HookPoint:
    """An activation's name and the functions listening to it (none: the call is free).

    A plain object, not a module: a component keeps it as an attribute (``self.hook_q =
    HookPoint()``), which Python reads directly (a submodule would go through
    ``nn.Module.__getattr__`` on every call). It holds no state, so state dicts, ``.to()`` and
    checkpoints never see it; :func:`find` finds it by walking the modules.
    """

    def __init__(self) -> None:
        self.name = ""  # set by the decoder: the TransformerLens-style name
        self.fns: list[HookFn] = []

    def __call__(self, activation: Tensor) -> Tensor:
        return self.run(activation) if self.fns else activation

    def run(self, activation: Tensor) -> Tensor:
        """Call each listener; a returned tensor replaces the activation from then on."""
        for fn in list(self.fns):
            out = fn(activation, self)
            if out is None:
                continue
            if not isinstance(out, Tensor) or out.shape != activation.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise TfsError(
                    f"a hook on {self.name} returned {got}; return a tensor of the "
                    f"activation's shape {tuple(activation.shape)} (or None to leave it)"
                )
            activation = out
        return activation

    def add(self, fn: HookFn) -> None:
        """Start calling ``fn`` (after any already listening)."""
        self.fns.append(fn)

    def remove(self, fn: HookFn) -> None:
        """Stop calling ``fn``."""
        self.fns.remove(fn)

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def fire_heads(hook: HookPoint, x: Tensor) -> Tensor:
    """Fire ``hook`` on per-head vectors ``[batch head pos d]`` shown as TransformerLens shows
    them, ``[batch pos head d]``; a replacement comes back in the model's layout."""
    if not hook.fns:
        return x
    return hook.run(x.transpose(1, 2)).transpose(1, 2)


class OutputHook(HookPoint):
    """A hook point on another module's output, for parts whose outputs a block adds up itself
    (``hook_attn_out``, ``hook_mlp_out``): it attaches a PyTorch forward hook to the module only
    while someone listens, so nothing runs otherwise."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._watched = module
        self._handle: Any = None

    def add(self, fn: HookFn) -> None:
        """Listen, attaching to the watched module on the first listener."""
        super().add(fn)
        if self._handle is None:
            self._handle = self._watched.register_forward_hook(self._on_output)

    def remove(self, fn: HookFn) -> None:
        """Stop listening, detaching from the module after the last listener."""
        super().remove(fn)
        if not self.fns and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_output(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        return self.run(output)


@attrs.frozen
class Around:
    """The hook points the decoder fires around its parts (see :func:`attach`)."""

    resid_pre: list[HookPoint]
    resid_post: list[HookPoint]
    unembed_in: HookPoint
    unembed_out: HookPoint


def attach(
    blocks: list[nn.Module],
    watched: list[tuple[nn.Module, nn.Module | None]],
    unembedding: nn.Module,
) -> Around:
    """Give every model the hook points that do not depend on its parts' code.

    Per block ``hook_resid_pre`` and ``hook_resid_post`` (the decoder fires them around the
    block) and ``hook_attn_out`` / ``hook_mlp_out`` (the outputs of the attention and MLP it
    was given, ``watched``); ``unembed.hook_in`` and ``unembed.hook_out`` around the
    unembedding. They are set as attributes of those modules, so their names are the modules'.
    """
    around = Around([HookPoint() for _ in blocks], [HookPoint() for _ in blocks],
                    HookPoint(), HookPoint())  # fmt: skip
    for i, (block, (attention, mlp)) in enumerate(zip(blocks, watched, strict=True)):
        vars(block).update(
            hook_resid_pre=around.resid_pre[i],
            hook_attn_out=OutputHook(attention),
            hook_resid_post=around.resid_post[i],
        )
        if mlp is not None:  # an attention-only block has none
            vars(block)["hook_mlp_out"] = OutputHook(mlp)
    vars(unembedding).update(hook_in=around.unembed_in, hook_out=around.unembed_out)
    return around


def hook_name(path: str) -> str:
    """A module path as a TransformerLens-style hook name."""
    return ".".join(ALIASES.get(part, part) for part in path.split("."))


def find(module: nn.Module) -> dict[str, HookPoint]:
    """Every hook point held by ``module`` or its submodules, by name (names set on the way)."""
    found: dict[str, HookPoint] = {}
    seen: set[int] = set()
    for path, child in module.named_modules():
        for attribute, value in vars(child).items():
            if isinstance(value, HookPoint) and id(value) not in seen:
                seen.add(id(value))
                value.name = hook_name(f"{path}.{attribute}" if path else attribute)
                found[value.name] = value
    return found


def listened(first: HookPoint, second: HookPoint) -> bool:
    """Whether someone listens at either point (so what they show must be computed)."""
    return bool(first.fns or second.fns)


def attend_with_pattern(
    scores_hook: HookPoint,
    pattern_hook: HookPoint,
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    query_positions: Tensor,
    key_positions: Tensor,
    score_bias: Tensor | None,
    window: int | None,
) -> Tensor:
    """Softmax attention written out, firing ``hook_attn_scores`` (masked with ``-inf``) and
    ``hook_pattern`` ``[batch head query_pos key_pos]`` on the way.

    An attention component calls this instead of its kernel while someone listens for either
    (so a kernel that never builds the score matrix still yields it, and a replaced pattern
    changes the output); an exact kernel gives the same output, which the conformance suite
    checks.
    """
    from transformer_from_scratch.core.functional import causal_mask

    compute = torch.float32 if queries.dtype in (torch.float16, torch.bfloat16) else queries.dtype
    q, k, v = queries.to(compute), keys.to(compute), values.to(compute)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if score_bias is not None:
        scores = scores + score_bias.to(compute)
    hidden = causal_mask(query_positions, key_positions, window)
    scores = scores_hook(scores.masked_fill(hidden, float("-inf")))
    pattern = pattern_hook(torch.softmax(scores, dim=-1))
    return (pattern @ v).to(queries.dtype)


__all__ = [
    "ALIASES",
    "Around",
    "HookFn",
    "HookPoint",
    "OutputHook",
    "attach",
    "attend_with_pattern",
    "find",
    "fire_heads",
    "hook_name",
    "listened",
]
