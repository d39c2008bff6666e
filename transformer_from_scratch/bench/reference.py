"""The model a user would otherwise pick: an idiomatic plain-PyTorch GPT (for benchmarks only).

``nn.Embedding``, ``nn.LayerNorm``, ``nn.Linear`` with fused QKV, and
``F.scaled_dot_product_attention``: the shape of nanoGPT-style code. It takes its sizes from a
GPT-2-family :class:`DecoderSpec` so both models do the same arithmetic. It lives outside
``components/`` on purpose: it is the yardstick, not part of the from-scratch set.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_from_scratch.core.spec import DecoderSpec


class _Block(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        d, inner = spec.d_model, spec.n_heads * spec.d_head
        self.heads = spec.n_heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * inner)
        self.proj = nn.Linear(inner, d)
        self.fc, self.out = nn.Linear(d, spec.d_mlp), nn.Linear(spec.d_mlp, d)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(mixed.transpose(1, 2).reshape(b, t, -1))
        out: Tensor = x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
        return out


class ReferenceGPT(nn.Module):
    """GPT-2 in plain PyTorch: tied embeddings, learned positions, pre-norm blocks, initialised
    as nanoGPT does (N(0, 0.02), zero biases, residual projections 0.02 / sqrt(2 n_layers))."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.wte = nn.Embedding(spec.d_vocab, spec.d_model)
        self.wpe = nn.Embedding(spec.n_ctx, spec.d_model)
        self.blocks = nn.ModuleList(_Block(spec) for _ in range(spec.n_layers))
        self.ln_f = nn.LayerNorm(spec.d_model)
        for module in self.modules():  # nanoGPT's initialisation
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, parameter in self.named_parameters():  # into the residual stream: by depth
            if name.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * spec.n_layers))

    def forward(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.ln_f(x) @ self.wte.weight.T
        return logits
