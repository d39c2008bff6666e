"""What the conformance suite does not reach: positions in any order, strided inputs, the
interpreter beside the compiler, half precision on the CPU, and (with a GPU) speed and memory."""

import os
import sys
from collections.abc import Callable, Sequence

import attrs
import pytest
import torch

from transformer_from_scratch import Dims, TfsError
from transformer_from_scratch.conformance.checks_kernel import reference_attention

NO_TRITON = "triton is not installed (pip install -e plugins/triton-flash)"

triton = pytest.importorskip("triton", reason=NO_TRITON)
from tfs_triton_flash import kernels  # noqa: E402
from tfs_triton_flash.triton_flash import TritonFlash, _interpreted, validate  # noqa: E402

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
DIMS = Dims(
    d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, d_vocab=13, n_ctx=24, n_kv_heads=2
)
Tensor = torch.Tensor


def _grads(kernel: Callable[..., Tensor], q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor,
           k_pos: Tensor, bias: Tensor | None, weights: Tensor) -> list[Tensor]:  # fmt: skip
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = kernel(q, k, v, query_positions=q_pos, key_positions=k_pos, score_bias=bias)
    return [out, *torch.autograd.grad((out * weights).sum(), (q, k, v))]


def _reference(window: int | None) -> Callable[..., Tensor]:
    def run(q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor, key_positions: Tensor,
            score_bias: Tensor | None) -> Tensor:  # fmt: skip
        return reference_attention(q, k, v, query_positions, key_positions, score_bias, window)

    return run


def _assert_same(mine: Sequence[Tensor], expected: Sequence[Tensor], atol: float) -> None:
    for name, a, b in zip(("output", "dq", "dk", "dv"), mine, expected, strict=True):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=f"{name} differs from the formula")


@pytest.mark.parametrize("window", [None, 5])
def test_positions_in_any_order_with_gaps(window: int | None) -> None:
    """Visibility comes from the positions, whatever their order: shuffled cached keys with gaps,
    queries at positions of their own, blocks where nothing is visible skipped."""
    gen = torch.Generator().manual_seed(0)
    k_pos = torch.randperm(200, generator=gen)[:70]
    q_pos = k_pos[torch.randperm(70, generator=gen)[:20]]  # every query sees at least itself
    q = torch.randn(2, 2, 20, 24, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 70, 24, generator=gen, dtype=torch.float64) for _ in range(2))
    bias = torch.randn(2, 20, 70, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 2, 20, 24, generator=gen, dtype=torch.float64)
    args = (q, k, v, q_pos, k_pos, bias, weights)
    mine = _grads(TritonFlash(DIMS, window=window, block=16), *args)
    _assert_same(mine, _grads(_reference(window), *args), atol=1e-10)


def test_strided_views_and_gradients() -> None:
    """Queries, keys and values cut from one fused projection, and an output gradient that is a
    transposed view: the kernels follow the strides."""
    gen = torch.Generator().manual_seed(1)
    fused = torch.randn(3, 40, 3, 4, 16, generator=gen).permute(2, 0, 3, 1, 4)  # [3 b h pos d]
    q, k, v = fused[0], fused[1], fused[2]
    assert not q.is_contiguous()
    pos = torch.arange(40)
    weights = torch.randn(3, 40, 4, 16, generator=gen).transpose(1, 2)
    args = (q, k, v, pos, pos, None, weights)
    _assert_same(_grads(TritonFlash(DIMS, block=16), *args), _grads(_reference(None), *args), 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_in_the_interpreter(dtype: torch.dtype) -> None:
    """Half-precision inputs give half-precision outputs and gradients, to their precision."""
    gen = torch.Generator().manual_seed(2)
    q, k, v, weights = (torch.randn(1, 2, 33, 8, generator=gen) for _ in range(4))
    pos = torch.arange(33)
    half = [x.to(dtype) for x in (q, k, v, weights)]
    mine = _grads(TritonFlash(DIMS, block=16), half[0], half[1], half[2], pos, pos, None, half[3])
    assert all(x.dtype == dtype for x in mine)
    expected = _grads(_reference(None), q, k, v, pos, pos, None, weights)
    _assert_same([x.float() for x in mine], expected, atol=3e-2)


def test_gradients_are_deterministic() -> None:
    """No atomics: two backward passes give the same bits."""
    gen = torch.Generator().manual_seed(3)
    q, k, v, weights = (torch.randn(2, 2, 50, 16, generator=gen) for _ in range(4))
    pos = torch.arange(50)
    first = _grads(TritonFlash(DIMS, block=16), q, k, v, pos, pos, None, weights)
    second = _grads(TritonFlash(DIMS, block=16), q, k, v, pos, pos, None, weights)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_meta_tensors_give_shapes_only() -> None:
    q = torch.empty(2, 3, 7, 8, device="meta", requires_grad=True)
    pos = torch.arange(7, device="meta")
    out = TritonFlash(DIMS)(q, q, q, query_positions=pos, key_positions=pos)
    assert out.device.type == "meta" and out.shape == q.shape
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad.shape == q.shape


def test_interpreted_copy_beside_the_compiled_kernels() -> None:
    """CPU tensors run an interpreted copy of the kernels; the imported module stays as Triton
    made it (compiled unless TRITON_INTERPRET is set), so GPU tensors can use it alongside."""
    from triton.runtime.interpreter import InterpretedFunction

    copy = _interpreted()
    assert copy is not kernels and sys.modules["tfs_triton_flash.kernels"] is kernels
    for name in ("forward_kernel", "backward_keys_kernel", "backward_queries_kernel"):
        assert isinstance(getattr(copy, name), InterpretedFunction)
        interpreting = bool(triton.knobs.runtime.interpret)
        assert isinstance(getattr(kernels, name), InterpretedFunction) == interpreting


def test_older_triton_is_switched_to_its_interpreter_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before Triton 3.4 there are no knobs: the variable is set while the copy is made, then
    put back as it was."""
    import types

    from tfs_triton_flash.triton_flash import _interpreting

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with _interpreting(types.SimpleNamespace()):
        assert os.environ["TRITON_INTERPRET"] == "1"
    assert os.environ["TRITON_INTERPRET"] == "0"
    monkeypatch.delenv("TRITON_INTERPRET")
    with _interpreting(types.SimpleNamespace()):
        assert os.environ["TRITON_INTERPRET"] == "1"
    assert "TRITON_INTERPRET" not in os.environ


def test_a_learned_score_bias_is_refused() -> None:
    q = torch.randn(1, 1, 4, 8)
    pos = torch.arange(4)
    bias = torch.zeros(1, 4, 4, requires_grad=True)
    with pytest.raises(TfsError, match="cannot learn it"):
        TritonFlash(DIMS)(q, q, q, query_positions=pos, key_positions=pos, score_bias=bias)


def test_options_are_validated() -> None:
    dims = Dims(
        d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, d_vocab=13, n_ctx=24, n_kv_heads=2
    )
    assert validate(dims, {"block": 64}) == []
    for bad in (8, 24, True, "64"):
        (problem,) = validate(dims, {"block": bad})
        assert "power of two" in problem
    (problem,) = validate(attrs.evolve(dims, dropout=0.1), {})
    assert "triton_flash" in problem and "dropout" in problem


@GPU
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_on_the_gpu_matches_the_formula(dtype: torch.dtype) -> None:
    gen = torch.Generator(device="cuda").manual_seed(4)
    q, k, v, weights = (torch.randn(2, 4, 1000, 64, generator=gen, device="cuda", dtype=dtype)
                        for _ in range(4))  # fmt: skip
    pos = torch.arange(1000, device="cuda")
    mine = _grads(TritonFlash(DIMS), q, k, v, pos, pos, None, weights)
    expected = _grads(_reference(None), q.double(), k.double(), v.double(), pos, pos, None,
                      weights.double())  # fmt: skip
    atol = 2e-3 if dtype == torch.float32 else 6e-2
    _assert_same([x.double() for x in mine], expected, atol=atol)


@GPU
def test_memory_is_linear_in_length_on_the_gpu() -> None:
    """Doubling the length doubles the peak memory of forward + backward (no length^2 matrix)."""
    peaks = []
    for length in (8192, 16384):
        q = torch.randn(1, 16, length, 64, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True)  # fmt: skip
        pos = torch.arange(length, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        TritonFlash(DIMS)(q, q, q, query_positions=pos, key_positions=pos).sum().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] < 2.5 * peaks[0]
