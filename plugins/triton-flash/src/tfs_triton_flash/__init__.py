"""A third-party attention kernel for transformer-from-scratch, written in Triton."""
