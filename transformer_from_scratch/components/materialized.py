"""``materialized``: the textbook attention kernel, building the score matrix it needs."""

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import causal_mask, mask_as_bias
from transformer_from_scratch.core.shapes import (
    KeyPositions,
    Keys,
    Mixed,
    Queries,
    QueryPositions,
    ScoreBias,
    Values,
)

CPU_BLOCK = 64  # queries per block on a CPU (measured: 64 and 128 alike, 32 and 256 slower)


class Materialized(nn.Module):
    """Scaled dot-product attention, exactly as written (Vaswani et al. 2017, eq. 1).

    ``softmax(Q K^T / sqrt(d_head) + bias + mask) V``. Dividing by ``sqrt(d_head)`` keeps the
    scores' variance near 1 whatever the head width, so the softmax does not saturate. The mask
    puts ``-inf`` wherever a key comes after its query (or, with ``window``, more than
    ``window - 1`` positions before it), so those weights are exactly zero. Memory grows with
    the square of the sequence length: the weights are built and kept for the backward pass.

    Built in blocks of ``block`` queries (64 on a CPU; one block on a GPU, where finding the
    blocks' bounds would wait for the device, and when compiled, where it would break the
    graph): a block's scores run only from the first to the last key
    any of its queries may see, so with a causal mask about half the matrix, which would be
    ``-inf`` and weigh nothing, is never computed. Each row still holds every key its query may
    see, so each softmax is the plain one, over the whole row. The backward pass is written out
    (like layer norm's and GELU's): per block, with ``P`` the weights and ``dO`` the output's
    gradient, ``dV += P^T dO``, ``dP = dO V^T``, ``dS = P (dP - rowsum(dO O))`` (the softmax's
    Jacobian; ``rowsum(P dP) = rowsum(dO O)`` is cheaper, as in FlashAttention-2),
    ``dQ = dS K / sqrt(d_head)`` and ``dK += dS^T Q / sqrt(d_head)``.
    """

    def __init__(self, dims: Dims, window: int | None = None, block: int | None = None) -> None:
        super().__init__()
        self.window, self.block = window, block
        self.dropout = dims.dropout  # on the attention weights, while training

    def forward(
        self,
        queries: Queries,
        keys: Keys,
        values: Values,
        *,
        query_positions: QueryPositions,
        key_positions: KeyPositions,
        score_bias: ScoreBias | None = None,
    ) -> Mixed:
        """Each query's weighted average of the values it may see."""
        hidden = causal_mask(query_positions, key_positions, self.window)
        # Blocks need the mask read back (a wait on a GPU; a graph break when compiled).
        whole = torch.compiler.is_compiling() or (queries.is_cuda and self.block is None)
        block = queries.shape[-2] if whole else self.block or CPU_BLOCK
        p = self.dropout if self.training else 0.0
        inputs = (queries, keys, values, score_bias, hidden, block, p)
        tracked = (queries, keys, values, score_bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tracked):
            mixed: Tensor = _MaterializedFunction.apply(*inputs)  # type: ignore[no-untyped-call]
            return mixed
        # No autograd bookkeeping (generation, evaluation), and each block's weights are let
        # go once used: memory for one block's scores, not the whole matrix's.
        return _attend(*inputs, keep=False).mixed


def query_blocks(hidden: Tensor, block: int) -> list[tuple[int, int, int, int, bool]]:
    """For each block of ``block`` queries: its rows ``[start, stop)``, the keys
    ``[first, end)`` that any of them may see, and whether some of those are hidden from some
    of its queries (so a mask is needed; a single block is always masked). Positions may come
    in any order. A block that may see no key at all gets every key (and so, like the
    formula, NaN weights)."""
    n_queries, n_keys = hidden.shape
    if n_queries <= block:  # one block: nothing to search, so nothing to read back
        return [(0, n_queries, 0, n_keys, True)]
    n_blocks = -(-n_queries // block)
    visible = torch.zeros(n_blocks * block, n_keys, dtype=torch.bool, device=hidden.device)
    visible[:n_queries] = ~hidden
    seen = visible.view(n_blocks, block, n_keys).any(1)  # [block key]: seen by some query
    counts = visible.view(n_blocks, -1).sum(1)
    keys = torch.arange(n_keys, device=hidden.device)
    first = torch.where(seen, keys, n_keys).amin(1)
    end = torch.where(seen, keys, -1).amax(1) + 1
    blocks = []
    for i, (lo, hi, count) in enumerate(torch.stack([first, end, counts], 1).tolist()):
        start, stop = i * block, min((i + 1) * block, n_queries)
        if hi == 0:
            lo, hi = 0, n_keys
        blocks.append((start, stop, lo, hi, count < (stop - start) * (hi - lo)))
    return blocks


class _Forward(NamedTuple):
    """The output and what the backward pass needs."""

    mixed: Tensor
    qs: Tensor
    ks: Tensor
    vs: Tensor
    saved: list[Tensor]
    blocks: list[tuple[int, int, int, int, bool]]


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, hidden: Tensor, block: int,
            p: float, keep: bool = True) -> _Forward:  # fmt: skip
    """The forward pass, on queries, keys and values as ``[batch*head pos d_head]`` stacks of
    matrices, so every block's products are one batched matrix product on views. ``keep``:
    keep the weights (and dropout's draws) for the backward pass."""
    batch, heads, n_queries, d_head = q.shape
    qs = (q / math.sqrt(d_head)).contiguous().view(batch * heads, n_queries, d_head)
    # A view where each head's keys already lie one after another (a KV cache's buffers),
    # else one copy (heads split from a fused projection).
    ks, vs = (x.reshape(batch * heads, -1, d_head) for x in (k, v))
    blocks = query_blocks(hidden, block)
    # Several blocks write into heads side by side per position (what the output projection
    # reads: joining the heads is then no copy); one block's product is the output itself.
    out = q.new_empty(batch, n_queries, heads, d_head) if len(blocks) > 1 else None
    saved = []
    for start, stop, lo, hi, masked in blocks:
        rows, columns = _span(qs, start, stop), _span(ks, lo, hi).transpose(1, 2)
        if masked:  # the mask is added as the product is made (no second pass over scores)
            cut = hidden if (stop - start, hi - lo) == hidden.shape else hidden[start:stop, lo:hi]
            scores = torch.baddbmm(mask_as_bias(cut, qs.dtype), rows, columns)
        else:
            scores = torch.bmm(rows, columns)
        if bias is not None:
            scores.view(batch, heads, stop - start, hi - lo).add_(bias[:, start:stop, lo:hi])
        weights = torch.softmax(scores, dim=-1)
        kept = _dropout_scale(weights, p)
        dropped = weights if kept is None else weights * kept
        mixed = torch.bmm(dropped, _span(vs, lo, hi)).view(batch, heads, -1, d_head)
        if out is not None:
            out[:, start:stop].copy_(mixed.transpose(1, 2))
        if keep:
            saved += [weights] if kept is None else [weights, kept]
    return _Forward(mixed if out is None else out.transpose(1, 2), qs, ks, vs, saved, blocks)


class _MaterializedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, hidden: Tensor,
                block: int, p: float) -> Tensor:  # fmt: skip
        done = _attend(q, k, v, bias, hidden, block, p)
        ctx.save_for_backward(done.qs, done.ks, done.vs, done.mixed, *done.saved)
        ctx.blocks, ctx.scale, ctx.dropout = done.blocks, 1.0 / math.sqrt(q.shape[-1]), p > 0
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        return done.mixed

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        qs, ks, vs, mixed, *saved = ctx.saved_tensors
        batch, heads, n_queries, d_head = mixed.shape
        d_out = grad_out.contiguous().view(batch * heads, n_queries, d_head)
        delta = (grad_out * mixed).sum(-1).reshape(batch * heads, n_queries, 1)
        grads = _Grads(qs, ks, ctx.bias is not None and ctx.needs_input_grad[3], batch)
        per_block = 2 if ctx.dropout else 1
        # The last block comes first: with a causal mask it sees every key (see _Grads).
        for i, (start, stop, lo, hi, _) in reversed(list(enumerate(ctx.blocks))):
            weights, *kept = saved[i * per_block : (i + 1) * per_block]
            rows = d_out[:, start:stop]
            dropped = weights if not kept else weights * kept[0]
            d_values = torch.bmm(dropped.transpose(1, 2), rows)
            d_weights = torch.bmm(rows, vs[:, lo:hi].transpose(1, 2))
            if kept:
                d_weights *= kept[0]
            d_scores = d_weights.sub_(delta[:, start:stop]).mul_(weights)
            grads.add(d_scores, d_values, start, stop, lo, hi)
        d_q, d_k, d_v, d_bias = grads.result(ctx.scale)
        if d_bias is not None:  # summed over what the bias was broadcast along
            d_bias = d_bias.sum_to_size(ctx.bias[0]).to(ctx.bias[1])
        shape = (batch, heads, -1, d_head)
        return d_q.view(shape), d_k.view(shape), d_v.view(shape), d_bias, None, None, None


class _Grads:
    """Gradients gathered block by block. The keys' and values' start as the first handled
    block's own result when that block sees every key (no zero-filled buffer to add it to)."""

    def __init__(self, qs: Tensor, ks: Tensor, with_bias: bool, batch: int) -> None:
        self.qs, self.ks, self.batch = qs, ks, batch
        self.d_q = torch.empty_like(qs)
        self.d_k: Tensor | None = None
        self.d_v: Tensor | None = None
        shape = (qs.shape[0] // batch, qs.shape[1], ks.shape[1])
        self.d_bias = qs.new_zeros(shape) if with_bias else None

    def add(self, d_scores: Tensor, d_values: Tensor, start: int, stop: int, lo: int,
            hi: int) -> None:  # fmt: skip
        self.d_q[:, start:stop] = torch.bmm(d_scores, self.ks[:, lo:hi])
        d_keys = torch.bmm(d_scores.transpose(1, 2), self.qs[:, start:stop])
        if self.d_bias is not None:
            grid = d_scores.view(self.batch, -1, stop - start, hi - lo)
            self.d_bias[:, start:stop, lo:hi] += grid.sum(0)
        if self.d_k is None or self.d_v is None:
            if (lo, hi) == (0, self.ks.shape[1]):
                self.d_k, self.d_v = d_keys, d_values
                return
            self.d_k, self.d_v = torch.zeros_like(self.ks), torch.zeros_like(self.ks)
        self.d_k[:, lo:hi] += d_keys
        self.d_v[:, lo:hi] += d_values

    def result(self, scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        assert self.d_k is not None and self.d_v is not None  # at least one block
        return self.d_q.mul_(scale), self.d_k, self.d_v, self.d_bias


def _span(x: Tensor, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` of every matrix in the stack; the stack itself when that is all of
    them (one query against a KV cache: no slicing to pay for, token after token)."""
    return x if start == 0 and stop == x.shape[1] else x[:, start:stop]


def _dropout_scale(weights: Tensor, p: float) -> Tensor | None:
    """Inverted dropout's multiplier (Srivastava et al. 2014): 0 with probability ``p``, else
    ``1 / (1 - p)``; ``None`` when nothing is dropped."""
    if p == 0:
        return None
    return torch.empty_like(weights).bernoulli_(1.0 - p).div_(1.0 - p)
