"""Small learning tasks: what each kind of part should be able to learn, in seconds on a CPU.

Each task trains the parts it is given (seeded, tiny) and returns a score in ``[0, 1]``; the
conformance checks and the tests compare it with a threshold. They follow the original
project's tests: embed + unembed learn bigrams; attention moves information from a flagged
token; an MLP learns a function no linear map can; a decoder memorises and reverses sequences.
"""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.functional import next_token_loss
from transformer_from_scratch.core.kinds import PositionalEncoding


def fit(
    parameters: Iterable[nn.Parameter], loss_fn: Callable[[], Tensor], steps: int, lr: float
) -> float:
    """Minimise ``loss_fn`` with Adam for ``steps`` steps; returns the last loss."""
    optimiser = torch.optim.Adam(list(parameters), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimiser.step()
    return float(loss.detach())


def bigram_accuracy(
    embedding: nn.Module, unembedding: nn.Module, d_vocab: int, *, steps: int = 150, seed: int = 0
) -> float:
    """Embed + unembed alone learn "the next token is this one plus one" (a bigram table).

    With no attention, the only path from a token to the next-token logits is
    ``W_E W_U``: the direct path of Elhage et al. 2021, which can hold bigram statistics.
    """
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, d_vocab, (64, 8), generator=generator)
    targets = (tokens + 1) % d_vocab

    def loss() -> Tensor:
        logits = unembedding(embedding(tokens))
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    params = {id(p): p for m in (embedding, unembedding) for p in m.parameters()}
    fit(params.values(), loss, steps, lr=0.05)
    with torch.no_grad():
        predicted = unembedding(embedding(tokens)).argmax(-1)
    return float((predicted == targets).float().mean())


def flagged_copy_batch(
    batch: int, length: int, d_model: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Inputs and targets for :func:`flagged_copy_accuracy`.

    The last two features are markers: ``flag`` (1 on one earlier position) and ``query``
    (1 on the last position). The target is 1.2 times the flagged position's content.
    """
    content = torch.randn(batch, length, d_model - 2, generator=generator)
    flagged = torch.randint(0, length - 1, (batch,), generator=generator)
    flag = torch.zeros(batch, length, 1)
    flag[torch.arange(batch), flagged] = 1.0
    query = torch.zeros(batch, length, 1)
    query[:, -1] = 1.0
    inputs = torch.cat([content, flag, query], dim=-1)
    target = 1.2 * content[torch.arange(batch), flagged]
    return inputs, target


def flagged_copy_accuracy(
    attention: nn.Module,
    positional: PositionalEncoding,
    d_model: int,
    *,
    steps: int = 300,
    seed: int = 0,
    tolerance: float = 0.25,
) -> float:
    """Attention learns to move 1.2x a flagged token's content to the last position.

    Only attention can do this: the information sits at another position. The score is the
    fraction of held-out sequences whose copied content is within ``tolerance`` (largest
    absolute error) of the target.
    """
    generator = torch.Generator().manual_seed(seed)
    length = 6
    positions = torch.arange(length)

    def predict(inputs: Tensor) -> Tensor:
        out: Tensor = attention(inputs, positional=positional, positions=positions)
        return out[:, -1, : d_model - 2]

    def loss() -> Tensor:
        inputs, target = flagged_copy_batch(64, length, d_model, generator)
        return nn.functional.mse_loss(predict(inputs), target)

    fit(attention.parameters(), loss, steps, lr=0.01)
    inputs, target = flagged_copy_batch(256, length, d_model, generator)
    with torch.no_grad():
        error = (predict(inputs) - target).abs().amax(dim=-1)
    return float((error < tolerance).float().mean())


def xor_accuracy(mlp: nn.Module, d_model: int, *, steps: int = 300, seed: int = 0) -> float:
    """An MLP learns ``x0 * x1`` on ``{-1, 1}^2`` (XOR in signs), which no linear map can.

    The score is the fraction of inputs whose output has the target's sign and is within 0.25
    of it.
    """
    generator = torch.Generator().manual_seed(seed)
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    inputs = torch.zeros(4, 1, d_model)
    inputs[:, 0, :2] = signs
    target = (signs[:, 0] * signs[:, 1])[:, None]

    def loss() -> Tensor:
        noisy = inputs + 0.05 * torch.randn(inputs.shape, generator=generator)
        return nn.functional.mse_loss(mlp(noisy)[:, 0, :1], target)

    fit(mlp.parameters(), loss, steps, lr=0.01)
    with torch.no_grad():
        out = mlp(inputs)[:, 0, :1]
    good = (torch.sign(out) == target) & ((out - target).abs() < 0.25)
    return float(good.float().mean())


def memorise_loss(decoder: nn.Module, d_vocab: int, *, steps: int = 200, seed: int = 0) -> float:
    """A decoder memorises ten random sequences of ten tokens; returns the final loss.

    Nothing in the data generalises, so only a model whose parts all pass gradients and can
    tell positions apart drives the loss towards zero. Each sequence starts with a different
    token (an id), so every continuation is determined by what came before.
    """
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, d_vocab, (10, 10), generator=generator)
    tokens[:, 0] = torch.randperm(d_vocab, generator=generator)[:10]
    return fit(decoder.parameters(), lambda: next_token_loss(decoder(tokens), tokens), steps, 0.01)


def reverse_batch(batch: int, half: int, d_vocab: int, generator: torch.Generator) -> Tensor:
    """Sequences ``x1..xn xn..x1``: random tokens followed by the same tokens reversed."""
    first = torch.randint(0, d_vocab, (batch, half), generator=generator)
    return torch.cat([first, first.flip(-1)], dim=-1)


def reverse_accuracy(
    decoder: nn.Module, d_vocab: int, *, half: int = 5, steps: int = 400, seed: int = 0
) -> tuple[float, float]:
    """Train on reversal; return next-token accuracy on the first half and on the second.

    Within the first half the next token is random: a causal model scores chance, ``1/d_vocab``.
    Within the second half every token is a copy of an earlier one: a model that attends to the
    mirrored position scores near 1. A model that scores above chance on the first half is
    seeing the future: this is how a learner checks the causal mask.
    """
    generator = torch.Generator().manual_seed(seed)

    def loss() -> Tensor:
        tokens = reverse_batch(64, half, d_vocab, generator)
        return next_token_loss(decoder(tokens), tokens)

    fit(decoder.parameters(), loss, steps, lr=0.003)
    tokens = reverse_batch(512, half, d_vocab, generator)
    with torch.no_grad():
        correct = (decoder(tokens)[:, :-1].argmax(-1) == tokens[:, 1:]).float()
    # Predictions made at positions 0..half-2 target first-half tokens; those from position
    # half (the first mirrored token onwards) target copies.
    return float(correct[:, : half - 1].mean()), float(correct[:, half:].mean())


def copy_back_accuracy(
    decoder: nn.Module, d_vocab: int, *, back: int = 2, steps: int = 400, seed: int = 0
) -> float:
    """A decoder learns to output the token ``back`` positions before the current one.

    Attention without position information treats every earlier token alike, so it cannot
    single out "two back"; a working positional encoding makes this easy. The score is
    held-out accuracy over positions ``back..``.
    """
    generator = torch.Generator().manual_seed(seed)

    def batch(size: int) -> Tensor:
        return torch.randint(0, d_vocab, (size, 10), generator=generator)

    def loss() -> Tensor:
        tokens = batch(64)
        logits = decoder(tokens)[:, back:]
        return nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, :-back].flatten())

    fit(decoder.parameters(), loss, steps, lr=0.01)
    tokens = batch(256)
    with torch.no_grad():
        predicted = decoder(tokens)[:, back:].argmax(-1)
    return float((predicted == tokens[:, :-back]).float().mean())
