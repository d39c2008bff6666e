"""``triton_flash``: FlashAttention-2 as three Triton kernels (forward, dK/dV, dQ).

The kernels are in :mod:`tfs_triton_flash.kernels`; this module is the attention kernel the
registry builds, and the ``torch.autograd.Function`` that launches them.
"""

import contextlib
import functools
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from transformer_from_scratch import Dims, TfsError
from transformer_from_scratch.core.functional import no_weight_dropout
from transformer_from_scratch.core.shapes import (
    KeyPositions,
    Keys,
    Mixed,
    Queries,
    QueryPositions,
    ScoreBias,
    Values,
)

# Blocks of 64 on the CPU, where Triton's interpreter runs the kernels: it spends its time per
# operation, not per element, so fewer, larger blocks are faster there (16 is 10x slower at 517
# tokens). The conformance suite also checks ``block = 16``, the smallest tl.dot accepts.
CPU_BLOCK = 64


class TritonFlash(nn.Module):
    """Exact causal attention in Triton, with linear memory, on a CUDA GPU.

    On the CPU the same kernels run in Triton's interpreter (numpy, one program at a time):
    correct and slow, meant for tests and for reading the kernels with a debugger; on a GPU they
    are compiled. ``block`` sets the query and key block sizes (a power of two, 16 or more);
    by default they are chosen from the device, the dtype and the head width.
    """

    def __init__(self, dims: Dims, window: int | None = None, block: int | None = None) -> None:
        super().__init__()
        self.window, self.block = window, block

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
        if score_bias is not None and score_bias.requires_grad:
            raise TfsError(
                "the triton_flash kernel treats score_bias as fixed; it cannot learn it (use the "
                "materialized kernel for a learned bias)"
            )
        if queries.device.type == "cpu" and queries.dtype in (torch.bfloat16, torch.float16):
            # The interpreter runs on numpy, which has no bfloat16: compute in float32 there.
            wide = (x.float() for x in (queries, keys, values))
            bias = None if score_bias is None else score_bias.float()
            mixed: Tensor = self(*wide, query_positions=query_positions,
                                 key_positions=key_positions, score_bias=bias)  # fmt: skip
            return mixed.to(queries.dtype)
        mixed = _Attention.apply(  # type: ignore[no-untyped-call]
            queries, keys, values, query_positions, key_positions, score_bias,
            self.window, self.block,
        )  # fmt: skip
        return mixed


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor,
                bias: Tensor | None, window: int | None, block: int | None) -> Tensor:  # fmt: skip
        ctx.window, ctx.block, ctx.has_bias = window, block, bias is not None
        ctx.meta = q.device.type == "meta"
        if ctx.meta:  # shapes only: nothing to compute
            ctx.shapes = (q, k, v)
            return torch.empty_like(q)
        q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
        launch = _Launch(q, k, window, block, bias)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:-1], dtype=launch.acc_torch, device=q.device)
        launch.run("forward", q, k, v, q_pos, k_pos, bias, out, lse)
        ctx.save_for_backward(q, k, v, q_pos, k_pos, out, lse, *(() if bias is None else (bias,)))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.meta:
            return (*(torch.empty_like(x) for x in ctx.shapes), None, None, None, None, None)
        q, k, v, q_pos, k_pos, out, lse, *rest = ctx.saved_tensors
        bias = rest[0] if ctx.has_bias else None
        dout = _last_dim_dense(grad_out)
        launch = _Launch(q, k, ctx.window, ctx.block, bias)
        delta = (dout.to(launch.acc_torch) * out.to(launch.acc_torch)).sum(-1)
        dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
        launch.run("keys", q, k, v, q_pos, k_pos, bias, dout, lse, delta, dk, dv)
        launch.run("queries", q, k, v, q_pos, k_pos, bias, dout, lse, delta, dq)
        return dq, dk, dv, None, None, None, None, None


def _last_dim_dense(x: Tensor) -> Tensor:
    """The kernels step along the head dimension one element at a time."""
    return x if x.stride(-1) == 1 else x.contiguous()


class _Launch:
    """Grid, block sizes and compile-time constants for one call's shapes, device and dtype."""

    def __init__(self, q: Tensor, k: Tensor, window: int | None, block: int | None,
                 bias: Tensor | None) -> None:  # fmt: skip
        import triton.language as tl

        self.kernels = _kernels(q.device)
        self.batch, self.heads, self.n_q, d_head = q.shape
        self.n_k, self.window = k.shape[-2], window
        wide = q.dtype == torch.float64
        self.acc_torch = torch.float64 if wide else torch.float32
        self.block = block or _default_block(q)
        self.constants = {
            "D_HEAD": d_head,
            "HAS_BIAS": bias is not None,
            "HAS_WINDOW": window is not None,
            "ACC": tl.float64 if wide else tl.float32,
            "PRECISION": _precision(q.dtype),
            "BLOCK_M": self.block,
            "BLOCK_N": self.block,
            "BLOCK_D": max(16, 1 << math.ceil(math.log2(d_head))),
        }
        self.bias_strides = (0, 0, 0) if bias is None else bias.stride()

    def run(self, which: str, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor,
            bias: Tensor | None, *rest: Tensor) -> None:  # fmt: skip
        """Launch one of the three kernels over (blocks, batch * heads)."""
        kernel = self.kernels[which]
        length = self.n_k if which == "keys" else self.n_q
        grid = (-(-length // self.block), self.batch * self.heads)
        out_strides = rest[0].stride()[:3] if which != "forward" else ()
        kernel[grid](
            q, k, v, q_pos, k_pos, q if bias is None else bias, *rest,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out_strides, *self.bias_strides,
            self.heads, self.n_q, self.n_k, self.window or 0, **self.constants,
        )  # fmt: skip


def _default_block(q: Tensor) -> int:
    """64 in the interpreter; on a GPU, as large as the element size leaves room for."""
    if q.device.type != "cuda":
        return CPU_BLOCK
    return {8: 32, 4: 64}.get(q.element_size(), 64)


def _precision(dtype: torch.dtype) -> str:
    """float32 products in TF32 only where PyTorch's own matmuls are allowed to use it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _kernels(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        from tfs_triton_flash import kernels
    elif device.type == "cpu":
        kernels = _interpreted()
    else:
        raise TfsError(
            f"the triton_flash kernel runs on CUDA GPUs (and, slowly, on the CPU through "
            f"Triton's interpreter), not on {device.type}: move the model, or choose another "
            "attention kernel (flash, materialized)"
        )
    return {
        "forward": kernels.forward_kernel,
        "keys": kernels.backward_keys_kernel,
        "queries": kernels.backward_queries_kernel,
    }


@functools.cache
def _interpreted() -> Any:
    """The kernels module loaded a second time with Triton's interpreter switched on.

    ``triton.jit`` decides at decoration time whether a function is compiled or interpreted,
    and interpreted kernels can call only interpreted helpers, so CPU tensors get their own copy
    of the module (GPU tensors in the same process keep the compiled one).
    """
    import importlib.util

    import triton

    spec = importlib.util.find_spec("tfs_triton_flash.kernels")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with _interpreting(triton):
        spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _interpreting(triton: Any) -> Iterator[None]:
    """``triton.jit`` makes interpreted functions while this lasts (Triton 3.4 and later read a
    knob, earlier versions the environment variable)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        with knobs.runtime.scope():
            knobs.runtime.interpret = True
            yield
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """A block is a power of two from 16; no dropout on the attention weights."""
    problems = []
    block = options.get("block")
    if block is not None and (
        isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1)
    ):
        problems.append(
            f"option block = {block!r} must be a power of two, 16 or more (64 suits most)"
        )
    return problems + no_weight_dropout("triton_flash", dims)
