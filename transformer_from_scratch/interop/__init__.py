"""Moving weights between this project and other implementations.

``from_hf(model)`` turns a Hugging Face ``transformers`` GPT-2, Llama, Mistral or GPT-NeoX model
(randomly initialised, or loaded by you from weights on disk) into this project's
:class:`~transformer_from_scratch.Decoder`, giving the same logits. ``transformers`` is not a
dependency of this package: the converter reads only the model's config and ``state_dict()``.
"""

from transformer_from_scratch.interop.huggingface import SUPPORTED, from_hf, spec_from_hf_config

__all__ = ["SUPPORTED", "from_hf", "spec_from_hf_config"]
