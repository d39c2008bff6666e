"""Checks of a whole decoder holding the implementation, and of kernel x positional combinations."""

import os
import tempfile

import safetensors.torch
import torch

from transformer_from_scratch.conformance.compare import first_difference, require_finite
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.conformance.tasks import fit
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import IncompatibleComponentsError
from transformer_from_scratch.core.functional import next_token_loss
from transformer_from_scratch.core.validate import fit_problems

LENGTH = 9


def _causal_problem(decoder: Decoder) -> str | None:
    decoder.eval()
    generator = torch.Generator().manual_seed(0)
    vocab = decoder.spec.d_vocab
    tokens = torch.randint(0, vocab, (2, LENGTH), generator=generator)
    before = require_finite(decoder(tokens), "the decoder's logits")
    for j in range(1, LENGTH):
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % vocab
        i = first_difference(before[:, :j], decoder(changed)[:, :j], pos_dim=1, atol=1e-5)
        if i is not None:
            return f"the logits at position {i} changed when the token at position {j} changed"
    return None


def check_decoder_causal(subject: Subject) -> None:
    """A whole decoder holding it is causal: no logit depends on a later token."""
    problem = _causal_problem(subject.decoder())
    if problem:
        raise CheckFailed(f"{problem}: the decoder sees the future")


def check_decoder_trains(subject: Subject) -> None:
    """A whole decoder holding it learns: 80 Adam steps halve the loss on ten short sequences."""
    decoder = subject.decoder()
    generator = torch.Generator().manual_seed(subject.seed)
    tokens = torch.randint(0, decoder.spec.d_vocab, (10, 8), generator=generator)
    with torch.no_grad():
        start = float(
            next_token_loss(require_finite(decoder(tokens), "the decoder's logits"), tokens)
        )
    end = fit(decoder.parameters(), lambda: next_token_loss(decoder(tokens), tokens), 80, 0.01)
    if not end < 0.5 * start:
        raise CheckFailed(
            f"the loss went from {start:.3f} to {end:.3f} in 80 steps (needs below half): is "
            "something blocking gradients?"
        )


def check_decoder_checkpoint_round_trip(subject: Subject) -> None:
    """A whole decoder saved with safetensors and loaded into a fresh one gives identical logits."""
    decoder = subject.decoder().eval()
    tokens = torch.randint(
        0, decoder.spec.d_vocab, (2, LENGTH), generator=torch.Generator().manual_seed(0)
    )
    fresh = subject.decoder(seed=1).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.safetensors")
        safetensors.torch.save_model(decoder, path)
        safetensors.torch.load_model(fresh, path)
    if not torch.equal(decoder(tokens), fresh(tokens)):
        raise CheckFailed(
            "a decoder loaded from a saved one gives different logits: is some state missing "
            "from state_dict()?"
        )


def check_combinations(subject: Subject) -> None:
    """With every registered partner (kernel x positional) it builds causally or is refused."""
    partner_kind = {"attention_kernel": "positional", "positional": "attention_kernel"}.get(
        subject.kind
    )
    if partner_kind is None:
        raise NotApplicable("combinations are checked between kernels and positional encodings")
    for partner in subject.registry.entries(partner_kind):
        spec = subject.spec(**{partner_kind: partner.name})
        misfits = fit_problems(spec, subject.registry)
        pair = f"{subject.id} with {partner.id}"
        if misfits:
            _expect_refusal(subject, spec, pair)
            continue
        problem = _causal_problem(build_decoder(spec, subject.registry))
        if problem:
            raise CheckFailed(f"{pair}: {problem}")


def _expect_refusal(subject: Subject, spec: object, pair: str) -> None:
    try:
        build_decoder(spec, subject.registry)  # type: ignore[arg-type]
    except IncompatibleComponentsError as err:
        if subject.entry.name not in str(err):
            raise CheckFailed(
                f"{pair} is refused, but the message does not name {subject.id}: {err}"
            ) from err
        return
    raise CheckFailed(f"{pair} should be refused (their capabilities do not fit) but it built")
