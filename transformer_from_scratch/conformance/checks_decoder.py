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
from transformer_from_scratch.core.errors import IncompatibleComponentsError, TfsError
from transformer_from_scratch.core.functional import next_token_loss
from transformer_from_scratch.core.plugins import DISTRIBUTION
from transformer_from_scratch.core.registry import Entry
from transformer_from_scratch.core.spec import DecoderSpec
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
    problem = _causal_problem(subject.moved_decoder())
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


PARTNER_KIND = {"attention_kernel": "positional", "positional": "attention_kernel"}


def _partners(subject: Subject, builtin: bool) -> tuple[str, list[Entry]]:
    partner_kind = PARTNER_KIND.get(subject.kind)
    if partner_kind is None:
        raise NotApplicable("combinations are checked between kernels and positional encodings")
    entries = [
        e
        for e in subject.registry.entries(partner_kind)
        if (e.provider.distribution == DISTRIBUTION) == builtin
    ]
    return partner_kind, entries


def pair_problem(subject: Subject, partner: Entry) -> str | None:
    """What goes wrong with ``partner`` in the other slot: built causally, or refused by name
    (when built, or in a TfsError naming either half when run)."""
    spec = subject.spec(**{partner.kind: partner.name})
    try:
        if fit_problems(spec, subject.registry):
            return _refusal_problem(subject, spec)
        return _causal_problem(build_decoder(spec, subject.registry))
    except CheckFailed as failed:
        return str(failed)
    except TfsError as refused:  # refused in words when run (a kernel given a learned bias)
        named = subject.entry.name in str(refused) or partner.name in str(refused)
        return None if named else f"raised {type(refused).__name__}: {refused}"
    except Exception as exc:  # a crash in either half is a problem of the pair
        return f"raised {type(exc).__name__}: {exc}"


def check_combinations(subject: Subject) -> None:
    """With every built-in partner (kernel x positional) it builds causally or is refused."""
    _, partners = _partners(subject, builtin=True)
    for partner in partners:
        problem = pair_problem(subject, partner)
        if problem:
            raise CheckFailed(f"{subject.id} with {partner.id}: {problem}")


def check_combinations_with_plugins(subject: Subject) -> str | None:
    """With each installed third-party partner it works; a broken partner is blamed, not it."""
    partner_kind, partners = _partners(subject, builtin=False)
    partners = [p for p in partners if p.id != subject.entry.id]
    if not partners:
        raise NotApplicable(f"no third-party {partner_kind} implementation is installed")
    notes = []
    for partner in partners:
        problem = pair_problem(subject, partner)
        if problem is None:
            continue
        notes.append(_blame(subject, partner, f"{subject.id} with {partner.id}: {problem}"))
    return "; ".join(notes) or None


def _blame(subject: Subject, partner: Entry, failure: str) -> str:
    """Which half of a failing pair is at fault: each is tried with a built-in instead."""
    partner_as_subject = Subject(partner, subject.registry)
    builtin_partner = partner_as_subject.default_entry()
    mine = pair_problem(subject, builtin_partner)
    if mine is not None:
        raise CheckFailed(f"{failure}; it fails with the built-in {builtin_partner.id} too: {mine}")
    theirs = pair_problem(partner_as_subject, subject.default_entry())
    if theirs is None:
        raise CheckFailed(
            f"{failure}. Each works with the built-ins, so the pair is incompatible: declare "
            "capabilities that let the builder refuse it"
        )
    return (
        f"{partner.id} is at fault, not {subject.id}: it fails with the built-in "
        f"{subject.default_entry().id} too ({theirs}); run `tfs check {partner.id}`"
    )


def _refusal_problem(subject: Subject, spec: DecoderSpec) -> str | None:
    try:
        build_decoder(spec, subject.registry)
    except IncompatibleComponentsError as err:
        if subject.entry.name not in str(err):
            return f"it is refused, but the message does not name {subject.id}: {err}"
        return None
    return "it should be refused (their capabilities do not fit) but it built"
