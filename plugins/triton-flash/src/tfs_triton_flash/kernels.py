# Parameter annotations mean something to Triton (tl.constexpr): the others stay unannotated.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# mypy: disallow-untyped-decorators=False
"""The three Triton kernels: the forward pass, and the backward pass in two kernels.

Notation follows FlashAttention-2 (Dao 2023). For one (sample, head) and a block of queries,
the forward kernel walks the blocks of keys, keeping for each query a running maximum ``m`` of
its scores, a running sum ``l`` of their exponentials and an unnormalised output ``acc``; a new
block whose scores raise the maximum rescales what was accumulated by ``exp(m_old - m_new)``
(the online softmax). It writes the output and each query's log-sum-exp ``lse = m + log(l)``,
which is all the backward pass needs to recompute any block of probabilities
``P = exp(S - lse)`` exactly.

The backward pass is split so that no two programs ever write the same memory (no atomics, so
the gradients are deterministic): one kernel owns a block of *keys* and walks the queries,
accumulating ``dV = P^T dO`` and ``dK = dS^T Q``; the other owns a block of *queries* and walks
the keys, accumulating ``dQ = dS K``; both use ``dS = P * (dO V^T - delta)`` with
``delta = rowsum(dO * O)``.

Which key may a query see is decided from the position tensors, never from indices: a key is
visible when ``key_pos <= query_pos`` (and, with a window, ``query_pos - key_pos < window``).
So decoding with a KV cache (one query at position 57 against 58 keys) is the same kernel.
Blocks where no query may see any key are skipped with a scalar test on the blocks' positions.
"""

import triton
import triton.language as tl

# Padding values for positions outside the tensors: never the smallest or largest position.
FAR: tl.constexpr = 1 << 60


# Reductions go through ``tl.reduce`` with the standard library's own combining functions rather
# than through ``tl.max``/``tl.sum``: those are themselves ``@triton.jit`` functions, compiled or
# interpreted once for the whole process when Triton is imported, while the combining functions
# are recognised by the interpreter and done in numpy. So the same kernels can also run, in an
# interpreted copy of this module, on CPU tensors next to compiled ones (see ``_interpreted``).
@triton.jit
def _row_max(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._elementwise_max)


@triton.jit
def _row_min(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._elementwise_min)


@triton.jit
def _row_sum(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def _positions(ptr, offsets, count):
    """Positions of a block, and the smallest and largest of those that exist."""
    ok = offsets < count
    pos = tl.load(ptr + offsets, mask=ok, other=0)
    low = _row_min(tl.where(ok, pos, FAR), 0)
    high = _row_max(tl.where(ok, pos, -FAR), 0)
    return pos, ok, low, high


@triton.jit
def _tile(ptr, b, h, stride_b, stride_h, stride_row, rows, dims, mask):
    """A ``[rows, dims]`` block of sample b, head h of a ``[batch head pos d_head]`` tensor whose
    last axis is dense; zero outside ``mask``."""
    offsets = b * stride_b + h * stride_h + rows[:, None] * stride_row + dims[None, :]
    return tl.load(ptr + offsets, mask=mask, other=0.0)


@triton.jit
def _blocks_meet(q_low, q_high, k_low, k_high, window, HAS_WINDOW: tl.constexpr):
    """Whether any query of a block may see any key of a block."""
    meet = k_low <= q_high
    if HAS_WINDOW:
        meet = meet & (q_low - k_high < window)
    return meet


@triton.jit
def _scores(q, k, q_pos, k_pos, q_ok, k_ok, bias_ptrs, scale, window,
            HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """One block of scaled, biased scores, -inf where the query may not see the key."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    both = q_ok[:, None] & k_ok[None, :]
    if HAS_BIAS:
        s += tl.load(bias_ptrs, mask=both, other=0.0).to(s.dtype)
    offset = q_pos[:, None] - k_pos[None, :]
    seen = both & (offset >= 0)
    if HAS_WINDOW:
        seen = seen & (offset < window)
    return tl.where(seen, s, float("-inf"))


@triton.jit
def forward_kernel(
    Q, K, V, QPOS, KPOS, BIAS, OUT, LSE,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_bh, stride_bm, stride_bn,
    n_heads, n_q, n_k, window,
    D_HEAD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Program (i, b*h): queries ``i*BLOCK_M ..`` of sample b, head h.

    ``OUT`` is contiguous ``[batch head query_pos d_head]``; ``LSE`` ``[batch head query_pos]``.
    """
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D_HEAD
    scale = 1.0 / tl.sqrt(tl.full((), D_HEAD, ACC))
    q_pos, q_ok, q_low, q_high = _positions(QPOS, rows, n_q)
    q = _tile(Q, b, h, stride_qb, stride_qh, stride_qm, rows, dims, q_ok[:, None] & d_ok[None, :])
    m = tl.full((BLOCK_M,), float("-inf"), ACC)
    total = tl.full((BLOCK_M,), 0.0, ACC)
    acc = tl.full((BLOCK_M, BLOCK_D), 0.0, ACC)
    for start in range(0, n_k, BLOCK_N):
        keys = start + cols
        k_pos, k_ok, k_low, k_high = _positions(KPOS, keys, n_k)
        if _blocks_meet(q_low, q_high, k_low, k_high, window, HAS_WINDOW):
            kv_mask = k_ok[:, None] & d_ok[None, :]
            k = _tile(K, b, h, stride_kb, stride_kh, stride_kn, keys, dims, kv_mask)
            bias_ptrs = BIAS + h * stride_bh + rows[:, None] * stride_bm + keys[None, :] * stride_bn
            s = _scores(q, k, q_pos, k_pos, q_ok, k_ok, bias_ptrs, scale, window,
                        HAS_BIAS, HAS_WINDOW, PRECISION).to(ACC)  # fmt: skip
            m_new = tl.maximum(m, _row_max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that see nothing yet
            p = tl.exp(s - m_safe[:, None])
            rescale = tl.exp(m - m_safe)
            total = total * rescale + _row_sum(p, 1)
            v = _tile(V, b, h, stride_vb, stride_vh, stride_vn, keys, dims, kv_mask)
            pv = tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(ACC)
            acc = acc * rescale[:, None] + pv
            m = m_new
    seen = total > 0
    out = acc / tl.where(seen, total, 1.0)[:, None]
    lse = tl.where(seen, m + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
    tl.store(OUT + (bh * n_q + rows[:, None]) * D_HEAD + dims[None, :],
             out.to(OUT.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])  # fmt: skip
    tl.store(LSE + bh * n_q + rows, lse, mask=q_ok)


@triton.jit
def _probabilities(q, k, q_pos, k_pos, q_ok, k_ok, lse, bias_ptrs, scale, window,
                   HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr, ACC: tl.constexpr,
                   PRECISION: tl.constexpr):  # fmt: skip
    """A block of attention probabilities, recomputed from the saved log-sum-exp."""
    s = _scores(q, k, q_pos, k_pos, q_ok, k_ok, bias_ptrs, scale, window,
                HAS_BIAS, HAS_WINDOW, PRECISION).to(ACC)  # fmt: skip
    safe = tl.where(lse == float("-inf"), 0.0, lse)
    return tl.exp(s - safe[:, None])


@triton.jit
def backward_keys_kernel(
    Q, K, V, QPOS, KPOS, BIAS, DOUT, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
    stride_bh, stride_bm, stride_bn,
    n_heads, n_q, n_k, window,
    D_HEAD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Program (j, b*h): dK and dV for keys ``j*BLOCK_N ..``, walking every block of queries.

    ``dK`` and ``dV`` are contiguous ``[batch head key_pos d_head]``.
    """
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    keys = block * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D_HEAD
    scale = 1.0 / tl.sqrt(tl.full((), D_HEAD, ACC))
    k_pos, k_ok, k_low, k_high = _positions(KPOS, keys, n_k)
    kv_mask = k_ok[:, None] & d_ok[None, :]
    k = _tile(K, b, h, stride_kb, stride_kh, stride_kn, keys, dims, kv_mask)
    v = _tile(V, b, h, stride_vb, stride_vh, stride_vn, keys, dims, kv_mask)
    dk = tl.full((BLOCK_N, BLOCK_D), 0.0, ACC)
    dv = tl.full((BLOCK_N, BLOCK_D), 0.0, ACC)
    for start in range(0, n_q, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q_pos, q_ok, q_low, q_high = _positions(QPOS, rows, n_q)
        if _blocks_meet(q_low, q_high, k_low, k_high, window, HAS_WINDOW):
            q_mask = q_ok[:, None] & d_ok[None, :]
            q = _tile(Q, b, h, stride_qb, stride_qh, stride_qm, rows, dims, q_mask)
            dout = _tile(DOUT, b, h, stride_ob, stride_oh, stride_om, rows, dims, q_mask)
            lse = tl.load(LSE + bh * n_q + rows, mask=q_ok, other=float("-inf"))
            delta = tl.load(DELTA + bh * n_q + rows, mask=q_ok, other=0.0)
            bias_ptrs = BIAS + h * stride_bh + rows[:, None] * stride_bm + keys[None, :] * stride_bn
            p = _probabilities(q, k, q_pos, k_pos, q_ok, k_ok, lse, bias_ptrs, scale, window,
                               HAS_BIAS, HAS_WINDOW, ACC, PRECISION)  # fmt: skip
            dv += tl.dot(tl.trans(p).to(dout.dtype), dout, input_precision=PRECISION).to(ACC)
            dp = tl.dot(dout, tl.trans(v), input_precision=PRECISION).to(ACC)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION).to(ACC)
    out_off = (bh * n_k + keys[:, None]) * D_HEAD + dims[None, :]
    tl.store(DK + out_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def backward_queries_kernel(
    Q, K, V, QPOS, KPOS, BIAS, DOUT, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
    stride_bh, stride_bm, stride_bn,
    n_heads, n_q, n_k, window,
    D_HEAD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_WINDOW: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Program (i, b*h): dQ for queries ``i*BLOCK_M ..``, walking every block of keys.

    ``dQ`` is contiguous ``[batch head query_pos d_head]``.
    """
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < D_HEAD
    scale = 1.0 / tl.sqrt(tl.full((), D_HEAD, ACC))
    q_pos, q_ok, q_low, q_high = _positions(QPOS, rows, n_q)
    q_mask = q_ok[:, None] & d_ok[None, :]
    q = _tile(Q, b, h, stride_qb, stride_qh, stride_qm, rows, dims, q_mask)
    dout = _tile(DOUT, b, h, stride_ob, stride_oh, stride_om, rows, dims, q_mask)
    lse = tl.load(LSE + bh * n_q + rows, mask=q_ok, other=float("-inf"))
    delta = tl.load(DELTA + bh * n_q + rows, mask=q_ok, other=0.0)
    dq = tl.full((BLOCK_M, BLOCK_D), 0.0, ACC)
    for start in range(0, n_k, BLOCK_N):
        keys = start + cols
        k_pos, k_ok, k_low, k_high = _positions(KPOS, keys, n_k)
        if _blocks_meet(q_low, q_high, k_low, k_high, window, HAS_WINDOW):
            kv_mask = k_ok[:, None] & d_ok[None, :]
            k = _tile(K, b, h, stride_kb, stride_kh, stride_kn, keys, dims, kv_mask)
            v = _tile(V, b, h, stride_vb, stride_vh, stride_vn, keys, dims, kv_mask)
            bias_ptrs = BIAS + h * stride_bh + rows[:, None] * stride_bm + keys[None, :] * stride_bn
            p = _probabilities(q, k, q_pos, k_pos, q_ok, k_ok, lse, bias_ptrs, scale, window,
                               HAS_BIAS, HAS_WINDOW, ACC, PRECISION)  # fmt: skip
            dp = tl.dot(dout, tl.trans(v), input_precision=PRECISION).to(ACC)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION).to(ACC)
    dq_off = (bh * n_q + rows[:, None]) * D_HEAD + dims[None, :]
    tl.store(DQ + dq_off, (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)
