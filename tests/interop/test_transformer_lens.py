"""Every activation both libraries name agrees with TransformerLens, on the same GPT-2 weights.

The weights are random (a config, nothing downloaded), copied from our decoder into a
``HookedTransformer`` of the same shape; both run the same tokens with every hook cached.
TransformerLens is a test-only extra: ``pip install -e ".[lens]"`` (CI installs it).
"""

import pytest
import torch

import transformer_from_scratch as tfs

lens = pytest.importorskip(
    "transformer_lens", reason="TransformerLens is not installed (pip install -e '.[lens]')"
)

SIZES = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256, "d_vocab": 97,
         "n_ctx": 32}  # fmt: skip


def _ours() -> tfs.Decoder:
    torch.manual_seed(0)
    spec = tfs.DecoderSpec.preset("gpt2").evolve(**SIZES)
    decoder = tfs.build_decoder(spec).eval()
    with torch.no_grad():  # non-zero biases and gains, so a mix-up of them would show
        for name, param in decoder.named_parameters():
            if name.endswith(("bias", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out")):
                param.normal_(0, 0.1)
            elif name.endswith("norm_attention.weight") or name.endswith("norm_mlp.weight"):
                param.normal_(1, 0.1)
    return decoder


def _theirs(decoder: tfs.Decoder) -> object:
    config = lens.HookedTransformerConfig(
        **SIZES, act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard",
        default_prepend_bos=False, dtype=torch.float32, device="cpu",
    )  # fmt: skip
    model = lens.HookedTransformer(config)
    state = {"embed.W_E": decoder.embedding.weight, "pos_embed.W_pos": decoder.positional.weight,
             "ln_final.w": decoder.final_norm.weight, "ln_final.b": decoder.final_norm.bias,
             "unembed.W_U": decoder.embedding.weight.T,
             "unembed.b_U": torch.zeros(SIZES["d_vocab"])}  # fmt: skip
    for i, block in enumerate(decoder.blocks):
        attn, mlp = block.attention, block.mlp
        for ours, theirs in (
            ("W_Q", "W_Q"),
            ("W_K", "W_K"),
            ("W_V", "W_V"),
            ("W_O", "W_O"),
            ("b_Q", "b_Q"),
            ("b_K", "b_K"),
            ("b_V", "b_V"),
            ("b_O", "b_O"),
        ):
            state[f"blocks.{i}.attn.{theirs}"] = getattr(attn, ours)  # fmt: skip
        for ours, theirs in (
            ("W_in", "W_in"),
            ("b_in", "b_in"),
            ("W_out", "W_out"),
            ("b_out", "b_out"),
        ):
            state[f"blocks.{i}.mlp.{theirs}"] = getattr(mlp, ours)  # fmt: skip
        for norm, name in ((block.norm_attention, "ln1"), (block.norm_mlp, "ln2")):
            state[f"blocks.{i}.{name}.w"], state[f"blocks.{i}.{name}.b"] = norm.weight, norm.bias
    missing, unexpected = model.load_state_dict({k: v.detach() for k, v in state.items()},
                                                strict=False)  # fmt: skip
    assert not unexpected, unexpected
    assert all(not any(w in k for w in ("W_", "b_", ".w", ".b")) for k in missing), missing
    return model.eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # HookedTransformer, deprecated in 3.x
def test_every_shared_activation_agrees_within_1e_4() -> None:
    decoder = _ours()
    model = _theirs(decoder)
    tokens = torch.randint(0, SIZES["d_vocab"], (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, ours = decoder.run_with_cache(tokens)
        their_logits, theirs = model.run_with_cache(tokens)  # type: ignore[attr-defined]
    shared = sorted(set(ours) & set(theirs.keys()))
    core = {"hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q",
            "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores",
            "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out",
            "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
            "blocks.0.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.0.ln1.hook_scale",
            "blocks.0.ln1.hook_normalized", "ln_final.hook_normalized"}  # fmt: skip
    assert core <= set(shared), sorted(core - set(shared))
    for name in shared:
        a, b = ours[name], theirs[name]
        finite = torch.isfinite(b)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.equal(torch.isfinite(a), finite), name
        assert torch.allclose(a[finite], b[finite], atol=1e-4, rtol=1e-4), (
            name, (a[finite] - b[finite]).abs().max().item(),
        )  # fmt: skip
    assert torch.allclose(logits, their_logits, atol=1e-4, rtol=1e-4)
