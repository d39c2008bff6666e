"""Training: corpora, tokenizers, the loop, and resumable training state."""
