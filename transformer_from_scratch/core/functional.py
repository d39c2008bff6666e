"""Shared maths for components, as plain functions: affine maps, masks, activations, inits.

Components import these instead of each other (no component imports a sibling). Everything is
written with tensor operations, so a learner can read the formula in the code.
"""

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from transformer_from_scratch.core.shapes import KeyPositions, QueryPositions

INIT_SCHEMES = ("normal", "xavier_uniform", "xavier_normal", "kaiming_normal", "zeros", "ones")


def affine(
    x: Float[Tensor, "*batch d_in"],
    weight: Float[Tensor, "d_in d_out"],
    bias: Float[Tensor, " d_out"] | None = None,
) -> Float[Tensor, "*batch d_out"]:
    """``x @ weight + bias``: the from-scratch stand-in for ``nn.Linear``."""
    out = x @ weight
    return out if bias is None else out + bias


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


def gelu(x: Float[Tensor, "*shape"], approximate: str = "none") -> Float[Tensor, "*shape"]:
    """Gaussian Error Linear Unit, ``x * Phi(x)`` (Hendrycks & Gimpel 2016, eq. 1).

    ``approximate="tanh"`` is the cheaper form GPT-2 used:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))
        return 0.5 * x * (1.0 + torch.tanh(inner))
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


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
