"""Generation: sampling strategies and the KV-cached decoding loop."""

from transformer_from_scratch.generation.generate import GenerationConfig, generate, generate_text

__all__ = ["GenerationConfig", "generate", "generate_text"]
