"""Looking inside a decoder: activation patching and pictures (hook points and the activation
cache live in ``core``, so every decoder has them)."""

from transformer_from_scratch.core.activations import ActivationCache, act_name
from transformer_from_scratch.interp import plots
from transformer_from_scratch.interp.patching import (
    PatchingResult,
    logit_difference,
    patch,
)

__all__ = ["ActivationCache", "PatchingResult", "act_name", "logit_difference", "patch", "plots"]
