"""The built-in components use tensor operations and nn.Parameter only."""

import re
from pathlib import Path

import transformer_from_scratch.components as components

BANNED = re.compile(
    r"nn\.(Linear|LayerNorm|RMSNorm|Embedding|MultiheadAttention|GELU|ReLU|SiLU|Transformer\w*)\b"
    r"|F\.(linear|layer_norm|rms_norm|embedding|gelu|relu|silu|scaled_dot_product_attention)\b"
    r"|functional\.(linear|layer_norm|rms_norm|embedding|gelu|relu|silu|scaled_dot_product_attention)\b"
    r"|scaled_dot_product_attention"
)
# The one clearly named exception: a kernel that exists to compare against PyTorch's fused one.
ALLOWED = {"sdpa.py"}


def test_no_builtin_component_uses_a_high_level_module() -> None:
    folder = Path(components.__file__).parent
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(folder.glob("*.py"))
        if path.name not in ALLOWED
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BANNED.search(line)
    ]
    assert offenders == [], "built-in components must be written from tensor operations"


def test_the_scan_catches_what_it_bans() -> None:
    for line in [
        "self.proj = nn.Linear(4, 4)",
        "F.layer_norm(x, (4,))",
        "torch.nn.functional.scaled_dot_product_attention(q, k, v)",
    ]:
        assert BANNED.search(line), line
