"""An activation cache with the helpers a learner expects (names and habits as TransformerLens).

``decoder.run_with_cache`` returns one::

    logits, cache = decoder.run_with_cache(tokens)
    cache["pattern", 0]                    # blocks.0.attn.hook_pattern
    stack, labels = cache.accumulated_resid()
    lens = cache.logit_lens()              # [layer+1 batch pos d_vocab]
"""

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.errors import TfsError

# Short names, as TransformerLens's ``utils.get_act_name`` takes them.
_BLOCK = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
_ATTN = {"q", "k", "v", "z", "attn_scores", "pattern"}
_MLP = {"pre", "pre_linear", "post"}
_NORM = {"scale", "normalized"}
_TOP = {"embed", "pos_embed"}


def act_name(name: str, layer: int | None = None, sub: str | None = None) -> str:
    """The full hook name for a short one: ``act_name("pattern", 0)`` is
    ``blocks.0.attn.hook_pattern``; ``act_name("scale", 1, "ln2")`` is
    ``blocks.1.ln2.hook_scale``; a full name is returned as it is."""
    if "." in name or (name.startswith("hook_") and name[5:] in _TOP):
        return name
    if name in _TOP:
        return f"hook_{name}"
    if layer is None and not (name in _NORM and sub == "ln_final"):
        raise TfsError(f"activation {name!r} belongs to a block: give its layer")
    if name in _BLOCK:
        return f"blocks.{layer}.hook_{name}"
    if name in _ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    if name in _NORM:
        where = "ln_final" if sub == "ln_final" else f"blocks.{layer}.{sub or 'ln1'}"
        return f"{where}.hook_{name}"
    known = sorted(_BLOCK | _ATTN | _MLP | _NORM | _TOP)
    raise TfsError(f"unknown activation {name!r}; short names: {', '.join(known)}")


class ActivationCache(Mapping[str, Tensor]):
    """Activations by hook name, from one run of ``decoder``."""

    def __init__(self, store: Mapping[str, Tensor], decoder: nn.Module) -> None:
        self.store = dict(store)
        self.decoder = decoder

    def __getitem__(self, key: str | tuple[str, int] | tuple[str, int, str]) -> Tensor:
        name = act_name(*key) if isinstance(key, tuple) else act_name(key)
        try:
            return self.store[name]
        except KeyError:
            raise TfsError(
                f"{name!r} is not in this cache (it holds {len(self.store)} activations; "
                "was it left out by names_filter?)"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def n_layers(self) -> int:
        """Blocks in the model the cache came from."""
        return len(self.decoder.blocks)  # type: ignore[arg-type]

    def accumulated_resid(
        self, layer: int | None = None, incl_mid: bool = False
    ) -> tuple[Tensor, list[str]]:
        """The residual stream before each block up to ``layer`` (all, then the final stream):
        ``[component batch pos d_model]`` and a label for each (``"2_pre"``, ``"final_post"``)."""
        last = self.n_layers if layer is None else layer
        parts, labels = [], []
        for i in range(last):
            parts.append(self[("resid_pre", i)])
            labels.append(f"{i}_pre")
            if incl_mid:
                parts.append(self[("resid_mid", i)])
                labels.append(f"{i}_mid")
        if layer is None or layer == self.n_layers:
            parts.append(self[("resid_post", self.n_layers - 1)])
            labels.append("final_post")
        return torch.stack(parts), labels

    def decompose_resid(self, layer: int | None = None) -> tuple[Tensor, list[str]]:
        """The residual stream as the sum of what wrote to it: the embeddings and each attention
        and MLP output before ``layer`` (``[component batch pos d_model]``, labels).

        For blocks that add their sublayers' outputs straight to the stream (``pre_norm``,
        ``parallel``) the components add up to the stream itself.
        """
        last = self.n_layers if layer is None else layer
        parts, labels = [self["embed"]], ["embed"]
        if "hook_pos_embed" in self.store:
            parts.append(self["pos_embed"])
            labels.append("pos_embed")
        for i in range(last):
            parts.append(self[("attn_out", i)])
            labels.append(f"{i}_attn_out")
            if act_name("mlp_out", i) in self.store:  # an attention-only block has none
                parts.append(self[("mlp_out", i)])
                labels.append(f"{i}_mlp_out")
        return torch.stack(parts), labels

    @torch.no_grad()
    def apply_final_norm(self, stack: Tensor) -> Tensor:
        """Each entry of a stack of residual streams through the model's final norm, as if it
        were the last stream (what the logit lens reads)."""
        final_norm: nn.Module = getattr(self.decoder, "final_norm")  # noqa: B009
        return torch.stack([final_norm(x) for x in stack])

    @torch.no_grad()
    def logit_lens(self) -> Tensor:
        """Logits read off the residual stream before each block and at the end:
        ``[layer+1 batch pos d_vocab]`` (nostalgebraist 2020)."""
        stack, _ = self.accumulated_resid()
        unembedding: nn.Module = getattr(self.decoder, "unembedding")  # noqa: B009
        return torch.stack([unembedding(x) for x in self.apply_final_norm(stack)])
