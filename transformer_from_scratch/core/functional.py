"""Shared maths for components, as plain functions: affine maps, masks, activations, inits.

Components import these instead of each other (no component imports a sibling). Everything is
written with tensor operations, so a learner can read the formula in the code.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.shapes import KeyPositions, QueryPositions

INIT_SCHEMES = ("normal", "xavier_uniform", "xavier_normal", "kaiming_normal", "zeros", "ones")


def affine(
    x: Float[Tensor, "*batch d_in"],
    weight: Float[Tensor, "d_in d_out"],
    bias: Float[Tensor, " d_out"] | None = None,
) -> Float[Tensor, "*batch d_out"]:
    """``x @ weight + bias``: the from-scratch stand-in for ``nn.Linear``.

    With a bias, the rows are flattened into one ``addmm`` (BLAS's ``C + A B``), which adds the
    bias during the product instead of in a second pass over the output.
    """
    if bias is None:
        return x @ weight
    rows = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
    return rows.view(*x.shape[:-1], weight.shape[-1])


def causal_mask(
    query_positions: QueryPositions, key_positions: KeyPositions, window: int | None = None
) -> Bool[Tensor, "query_pos key_pos"]:
    """``True`` where a query must *not* see a key: the key is later (or out of the window).

    Using explicit positions (not ``triu`` on a square) keeps the mask right when a KV cache
    makes the keys run further back than the queries.
    """
    offset = query_positions[:, None] - key_positions[None, :]
    hidden = offset < 0
    if window is not None:
        hidden = hidden | (offset >= window)
    return hidden


def mask_as_bias(
    hidden: Bool[Tensor, "query_pos key_pos"], dtype: torch.dtype
) -> Float[Tensor, "query_pos key_pos"]:
    """A mask as scores to add: ``-inf`` where a query may not see a key (``hidden``, as
    ``causal_mask`` gives it), else 0. Added to the scores, or given to ``baddbmm`` as the
    product's starting value, it costs at most one pass over them and no boolean indexing
    (cheaper than ``masked_fill`` on the scores on a CPU), and it broadcasts over heads."""
    bias = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device)
    return bias.masked_fill_(hidden, float("-inf"))


def gelu(x: Float[Tensor, "*shape"], approximate: str = "none") -> Float[Tensor, "*shape"]:
    """Gaussian Error Linear Unit, ``x * Phi(x)`` (Hendrycks & Gimpel 2016, eq. 1).

    ``approximate="tanh"`` is the cheaper form GPT-2 used:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. Both forms carry a hand-derived
    backward (see :class:`_GELU`), which touches memory fewer times than autograd's chain of
    small operations.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        out: Tensor = _GELU.apply(x, approximate == "tanh")  # type: ignore[no-untyped-call]
        return out
    return _gelu_forward(x, approximate == "tanh")  # (no autograd bookkeeping to pay for)


_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715

# Element-wise work on a CPU is bound by memory, not arithmetic: a formula written as several
# tensor operations reads and writes the whole tensor once per operation. Done one piece at a
# time, every pass after the first finds its piece still in the core's cache. 1 MiB per piece
# (a core's L2 here) was the fastest of 64 KiB-1 MiB for GELU on 2 cores.
_PIECE_BYTES = 1 << 20


def _pieces(*tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Matching flat pieces of same-shaped contiguous tensors, small enough to stay in cache
    while several passes run over them (the whole tensors at once off the CPU, where each pass
    is one kernel launch and there is no cache to keep)."""
    size, flat = _piece_size(tensors[0]), tuple(tensor.view(-1) for tensor in tensors)
    if size >= tensors[0].numel():  # one piece: no split to pay for
        yield flat
        return
    yield from zip(*(tensor.split(size) for tensor in flat), strict=True)


def _piece_size(x: Tensor) -> int:
    """How many elements of ``x`` one piece holds (all of them off the CPU)."""
    if x.device.type != "cpu":
        return max(1, x.numel())
    return max(1, min(x.numel(), _PIECE_BYTES // x.element_size()))


def _gelu_forward(x: Tensor, tanh: bool) -> Tensor:
    """GELU, piece by piece: each piece's gate is made in its piece of the output, then
    multiplied by ``x`` there (no scratch buffer: fewer operations, as fast on large inputs
    and a quarter faster on a generated token's)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    for x_, out_ in _pieces(x, out):
        _gate(x_, tanh, out_).mul_(x_)
    return out


def _gate(x: Tensor, tanh: bool, out: Tensor) -> Tensor:
    """What GELU multiplies ``x`` by: ``s`` of the tanh form, or ``Phi(x)``, into ``out``."""
    if tanh:  # s = sigmoid(x (2c + 2ca x^2))
        torch.mul(x, x, out=out).mul_(2.0 * _TANH_C * _TANH_A).add_(2.0 * _TANH_C)
        return out.mul_(x).sigmoid_()
    # Phi(x) = (1 + erf(x / sqrt(2))) / 2
    return torch.mul(x, 1.0 / math.sqrt(2.0), out=out).erf_().add_(1.0).mul_(0.5)


class _GELU(torch.autograd.Function):
    """GELU with its derivative written out, computed piece by piece (see :func:`_pieces`).

    Exact: ``y = x Phi(x)``, so ``dy/dx = Phi(x) + x phi(x)`` with ``phi`` the normal density.
    Tanh form: with ``t = tanh(c (x + a x^3))``, ``y = x (1 + t) / 2`` and
    ``dy/dx = (1 + t) / 2 + x (1 - t^2) c (1 + 3 a x^2) / 2``. Computed through
    ``s = (1 + t) / 2 = sigmoid(2 c (x + a x^3))`` (one sigmoid, far cheaper than tanh on a
    CPU): ``y = x s`` and, as ``(1 - t^2) / 2 = 2 s (1 - s)``,
    ``dy/dx = s + x s (1 - s) 2 c (1 + 3 a x^2)``: the same numbers to rounding.

    Only ``x`` is kept for the backward pass, which computes the gate again piece by piece
    where it is needed: cheaper than writing a second tensor of the input's size and reading
    it back (and it keeps the activations' memory to the reference's).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, tanh: bool) -> Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.tanh = tanh
        return _gelu_forward(x, tanh)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        out, scratch = torch.empty_like(x), x.new_empty(2, _piece_size(x))
        two_c = x.new_full((), 2.0 * _TANH_C)
        for x_, grad_, out_ in _pieces(x, grad, out):
            gate = _gate(x_, ctx.tanh, scratch[0, : len(x_)])
            if ctx.tanh:  # s + [2c (1 + 3a x^2)] [s (1 - s)] x
                torch.addcmul(two_c, x_, x_, value=6.0 * _TANH_C * _TANH_A, out=out_)
                spread = torch.addcmul(gate, gate, gate, value=-1.0, out=scratch[1, : len(x_)])
                # s (1 - s) first: it is exactly 0 for large |x|, where x^3 would overflow
                torch.addcmul(gate, out_.mul_(spread), x_, out=out_)
            else:  # Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) (exp2: 5x cheaper)
                torch.mul(x_, x_, out=out_).mul_(-0.5 / math.log(2.0)).exp2_()
                out_.mul_(1.0 / math.sqrt(2.0 * math.pi)).mul_(x_).add_(gate)
            out_.mul_(grad_)
        return out, None


def dropout(x: Float[Tensor, "*shape"], p: float, training: bool) -> Float[Tensor, "*shape"]:
    """Inverted dropout (Srivastava et al. 2014): while training, each entry is zeroed with
    probability ``p`` and the rest scaled by ``1 / (1 - p)``, so expectations are unchanged and
    evaluation needs no rescaling; otherwise ``x`` itself."""
    if not training or p == 0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p)
    return x * keep.div_(1.0 - p)


def no_weight_dropout(name: str, dims: Dims) -> list[str]:
    """A kernel's spec-time problem when the spec asks for dropout it cannot apply to its
    attention weights (the other dropout sites do not depend on the kernel)."""
    if not dims.dropout:
        return []
    return [f"dropout = {dims.dropout}: the {name} kernel has no dropout on its attention "
            "weights; use the materialized or sdpa kernel, or dropout = 0"]  # fmt: skip


def new_weight(
    *shape: int, scheme: str, fan_in: int, fan_out: int, std: float = 0.02
) -> nn.Parameter:
    """A parameter of ``shape`` initialised by ``scheme`` with explicit fans.

    Fans are passed in because a per-head weight ``[head d_model d_head]`` is not laid out the
    way ``torch.nn.init`` assumes. Schemes: ``normal`` (N(0, std^2), GPT-2 uses std 0.02),
    ``xavier_uniform`` and ``xavier_normal`` (Glorot & Bengio 2010: variance
    2/(fan_in+fan_out)), ``kaiming_normal`` (He et al. 2015: variance 2/fan_in, for ReLU),
    ``zeros``, ``ones``.
    """
    data = torch.empty(*shape)
    with torch.no_grad():
        if scheme == "normal":
            data.normal_(0.0, std)
        elif scheme == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            data.uniform_(-bound, bound)
        elif scheme == "xavier_normal":
            data.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        elif scheme == "kaiming_normal":
            data.normal_(0.0, math.sqrt(2.0 / fan_in))
        elif scheme in ("zeros", "ones"):
            data.fill_(1.0 if scheme == "ones" else 0.0)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}; choose one of {INIT_SCHEMES}")
    return nn.Parameter(data)


def choice_problems(option: str, value: object, allowed: tuple[str, ...]) -> list[str]:
    """A problem for a spec validator when an option is not one of ``allowed``."""
    if value in allowed:
        return []
    return [f"option {option} = {value!r} is not one of {', '.join(map(repr, allowed))}"]


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Mean negative log-probability of each next token.

    The logits at positions ``0..T-2`` predict tokens ``1..T-1``; the last position has no
    target. ``log_softmax`` subtracts the log-sum-exp, so a perfect prediction scores 0.
    """
    return token_loss(logits[:, :-1], tokens[:, 1:])


def token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], targets: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Mean negative log-probability of ``targets`` under ``logits`` (cross-entropy).

    ``log_softmax`` subtracts the log-sum-exp from each logit; computed in float32 so bfloat16
    logits do not lose the small probabilities.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, targets[..., None]).mean()


def rms_normalize(x: Float[Tensor, "*shape d"], eps: float) -> Float[Tensor, "*shape d"]:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis: unit root mean square, no centring.

    Zhang & Sennrich 2019 ("Root Mean Square Layer Normalization"): dropping layer norm's mean
    subtraction keeps its rescaling invariance at lower cost.
    """
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def layer_normalize(
    x: Float[Tensor, "*shape d"],
    weight: Float[Tensor, " d"],
    bias: Float[Tensor, " d"] | None,
    eps: float,
) -> Float[Tensor, "*shape d"]:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (biased variance).

    Carries a hand-derived backward (see :class:`_LayerNorm`), which makes fewer passes over
    memory than autograd's chain of small operations.
    """
    tracked = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tracked):
        out: Tensor = _LayerNorm.apply(x, weight, bias, eps)  # type: ignore[no-untyped-call]
        return out
    return _layer_norm_forward(x, weight, bias, eps)[0]  # (no autograd bookkeeping)


def _layer_norm_forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Layer norm's output, ``xhat`` and ``rstd = 1 / sqrt(var + eps)``."""
    # (torch.var_mean would do this in one call, but is far slower on CPUs today; the 2-norm
    # of each centred row is a reduction that reads it once and allocates nothing. The mean is
    # subtracted as the sum times 1/d, which `sub` folds in: `mean` is a sum and a division,
    # one more operation, and one operation's overhead is what a generated token's rows cost.)
    d = x.shape[-1]
    xhat = torch.sub(x, x.sum(dim=-1, keepdim=True), alpha=1.0 / d)
    norm = torch.linalg.vector_norm(xhat, dim=-1, keepdim=True)
    rstd = norm.square_().div_(d).add_(eps).rsqrt_()  # 1 / sqrt(var + eps)
    xhat.mul_(rstd)
    out = xhat * weight if bias is None else torch.addcmul(bias, xhat, weight)
    return out, xhat, rstd


class _LayerNorm(torch.autograd.Function):
    """Layer norm with its derivative written out.

    With ``xhat = (x - mean) * rstd`` and ``g = dL/dy * weight``, the input gradient is
    ``rstd * (g - mean(g) - xhat * mean(g * xhat))``: the two means remove what the
    normalisation itself would undo (a shift, and a scaling along ``xhat``). Both means are
    dot products with ``weight`` (``mean(g) = (dL/dy . weight) / d``), and
    ``dL/dy * xhat`` is needed for the weight's gradient anyway, so the backward pass makes
    few trips over memory, which is what layer norm's cost is on a CPU. Each dot product is a
    matrix-vector product (one read of its matrix; ``linalg.vecdot`` would multiply into a
    temporary first and sum it after: two more passes, 1.1 ms of 2.8 at [16 256 384]).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
        out, xhat, rstd = _layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None, None]:
        xhat, rstd, weight = ctx.saved_tensors
        rows, width = tuple(range(grad.dim() - 1)), grad.shape[-1]
        product = grad * xhat
        grad_weight = product.sum(rows)
        grad_bias = grad.sum(rows) if ctx.has_bias else None
        as_product = weight.to(product.dtype)  # (dot products need one dtype)
        along = (product @ as_product).div_(width).unsqueeze(-1)  # mean(g xhat)
        mean_g = (grad.to(product.dtype) @ as_product).div_(width).unsqueeze(-1)  # mean(g)
        g = torch.mul(grad, weight, out=product).addcmul_(xhat, along, value=-1)
        grad_x = torch.addcmul(mean_g.mul_(rstd).neg_(), g, rstd, out=g)  # rstd (g - mean(g))
        return grad_x, grad_weight, grad_bias, None


# What a plugin may import from here (the plugin guide lists them); the rest is internal.
PLUGIN_HELPERS = (
    "new_weight",
    "affine",
    "causal_mask",
    "mask_as_bias",
    "gelu",
    "dropout",
    "rms_normalize",
    "layer_normalize",
    "choice_problems",
    "no_weight_dropout",
    "next_token_loss",
)
