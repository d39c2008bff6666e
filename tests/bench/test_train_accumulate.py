"""``tfs bench train --accumulate N``: N forward and backward passes per optimiser step."""

import torch

from transformer_from_scratch import DecoderSpec, build_decoder
from transformer_from_scratch.bench.train import _step_fn


def _gradient_stepped_with(accumulate: int) -> tuple[torch.Tensor, int]:
    """The gradient the optimiser stepped with (of the first weight) and the forward passes."""
    torch.manual_seed(0)
    model = build_decoder(DecoderSpec.preset("tiny").evolve(n_ctx=16))
    calls, seen = [], []
    model.register_forward_hook(lambda *_: calls.append(1))
    weight = next(model.parameters())
    weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    _step_fn(model, tokens, torch.float32, accumulate)()
    return seen[-1], len(calls)


def test_one_step_averages_the_accumulated_gradients() -> None:
    once, one_call = _gradient_stepped_with(1)
    thrice, three_calls = _gradient_stepped_with(3)
    assert (one_call, three_calls) == (1, 3)
    # the same batch three times: the mean of the three gradients is the single batch's
    torch.testing.assert_close(thrice, once, rtol=1e-4, atol=1e-7)
