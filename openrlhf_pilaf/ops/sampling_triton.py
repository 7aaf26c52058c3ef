"""Fused Triton kernels for interpolated sampling (CUDA; CPU only under TRITON_INTERPRET=1, for tests).

Same contract and the same tokens for the same uniform as `sampling_torch`. Nothing of size
[B, V] is written to global memory: each pass re-reads the logits (bf16 rows of the policy and,
where w != 0, the reference) and recomputes z = ((1 + w) * h_policy - w * h_ref) / T in registers.

Work is split over (row, chunk) programs so that small batches still fill the GPU:

1. `_stats_kernel`, grid (B, C): per chunk, online softmax statistics (running max and sum) of the
   policy, the reference and z, the smallest finite z and two counts. One read of the chunk.
2. `_round_kernel`, grid (B, C), launched `rounds` times, only when top-k / top-p may be active:
   one step of a threshold bisection over VALUES (no sort). Each program first advances the row's
   search state saved by the previous launch with that launch's per-chunk results (every program of
   a row computes the same state from the same numbers; the chunk-0 program saves it for the next
   launch), then evaluates NPIV pivots over its chunk: tail count and tail mass above each pivot,
   and the largest z below it. One read of the chunk; finished rows read nothing.
3. `_sample_kernel`, grid (B,): advances the search to the final threshold t (finishing it over the
   whole row in one program where `rounds` steps were not enough), picks the chunk holding the uniform's
   position in the kept mass from the per-chunk masses, and scans that chunk in vocabulary order
   (inverse CDF), then gathers the token's two logits for the log-probs and writes the row status.

The threshold search keeps an interval [lo, hi) holding t, the largest row value that satisfies
the rule (see `sampling_torch.keep_threshold`); each step splits it at NPIV pivots and keeps the
piece between the last pivot that satisfies the rule and the next, tightened to the largest value
present. It stops when that piece holds a single value, so t is an exact row value and the kept set
{z >= t} is the torch path's, ties included. Every step removes at least the top value of the
interval and shrinks it NPIV-fold, so the search ends for any finite data.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from openrlhf_pilaf.ops.validation import BackendOutput, RowStatus, SamplingInputs

# Per-chunk statistics record, float32 slots: 0 max / 1 sum of the policy, 2 / 3 of the reference,
# 4 / 5 of z, 6 smallest finite z, 7 number of finite z, 8 number of allowed (not banned) tokens.
NSTAT = 16
# Per-row search state saved between round launches, float32 slots, in the order of the state tuple
# (see _row_setup). Codes inside it: phase 0 top-k search, 1 top-p search, 2 done; source of the
# per-chunk tail masses at lo: -1 the statistics pass (nothing cut), r >= 0 round r (with the pivot
# number), -2 none (found by the sample kernel's own search: it scans the whole row).
NSTATE = 16
# Default number of split search rounds per active filter (top-k, top-p).
ROUNDS_PER_PHASE = 4


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@triton.jit
def _param(arg, row, PER_ROW: tl.constexpr):
    """A per-row parameter: loaded from a [B] tensor, or the scalar passed as is."""
    if PER_ROW:  # noqa: SIM108 (a constexpr branch: only one side is compiled)
        v = tl.load(arg + row).to(tl.float32)
    else:
        v = tl.cast(arg, tl.float32)
    return v


@triton.jit
def _splat_flag(flag, like):
    """A scalar condition as a boolean block shaped like `like`. Spelled via an int32 select because
    Triton's interpreter (3.6 to 3.9 at least) mis-types a scalar comparison broadcast into `&` with a block."""
    return (tl.zeros_like(like).to(tl.int32) + tl.where(flag, 1, 0)) != 0


@triton.jit
def _interp(hp, hr, w, temp, HAS_REF: tl.constexpr):
    """z = ((1 + w) * hp - w * hr) / T with banned tokens at -inf (twin of sampling_torch.interpolated_logits).

    `hr` must already be 0 where w == 0 (callers load it masked), so NaN there cannot leak into z.
    """
    if HAS_REF:
        banned = (hp == float("-inf")) | (_splat_flag(w != 0, hp) & (hr == float("-inf")))
        # docs/interpolation.md: z(w) = (1 + w) * h_policy - w * h_ref, then temperature.
        z = ((1.0 + w) * hp - w * hr) / temp
    else:
        banned = hp == float("-inf")
        z = ((1.0 + w) * hp - w * 0.0) / temp
    return tl.where(banned, float("-inf"), z), banned


@triton.jit
def _load_z(pol_ptr, ref_ptr, p_row, r_row, cols, mask, s_pv, s_rv, w, temp, HAS_REF: tl.constexpr):
    """z for a block of columns; the reference is not read at all in rows with w == 0."""
    hp = tl.load(pol_ptr + p_row + cols * s_pv, mask=mask, other=float("-inf")).to(tl.float32)
    if HAS_REF:
        hr = tl.load(ref_ptr + r_row + cols * s_rv, mask=mask & _splat_flag(w != 0, cols), other=0.0).to(tl.float32)
    else:
        hr = hp
    z, _ = _interp(hp, hr, w, temp, HAS_REF)
    return z


@triton.jit
def _online(m, s, x):
    """Fold a block into a running (max, sum exp(x - max)); NaN or +inf anywhere makes s NaN."""
    m_new = tl.maximum(m, tl.max(x, 0))
    base = tl.where(m_new == float("-inf"), 0.0, m_new)
    s = s * tl.exp(m - base) + tl.sum(tl.exp(x - base), 0)
    return m_new, s


@triton.jit
def _merge(m_c, s_c):
    """Combine per-chunk (max, sum) pairs into the row's."""
    m = tl.max(m_c, 0)
    base = tl.where(m == float("-inf"), 0.0, m)
    return m, tl.sum(s_c * tl.exp(m_c - base), 0)


@triton.jit(do_not_specialize=["w_arg", "t_arg"])
def _stats_kernel(
    pol_ptr,
    ref_ptr,
    w_arg,
    t_arg,
    stats_ptr,
    V,
    chunk,
    s_pb,
    s_pv,
    s_rb,
    s_rv,
    HAS_REF: tl.constexpr,
    W_PER_ROW: tl.constexpr,
    T_PER_ROW: tl.constexpr,
    NSTAT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    cid = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    w = _param(w_arg, row, W_PER_ROW)
    temp = _param(t_arg, row, T_PER_ROW)
    p_row = row.to(tl.int64) * s_pb
    r_row = row.to(tl.int64) * s_rb
    start = cid * chunk
    end = tl.minimum(start + chunk, V)

    m_p = tl.full([], float("-inf"), tl.float32)
    s_p = tl.zeros([], tl.float32)
    m_r = tl.full([], float("-inf"), tl.float32)
    s_r = tl.zeros([], tl.float32)
    m_z = tl.full([], float("-inf"), tl.float32)
    s_z = tl.zeros([], tl.float32)
    min_z = tl.full([], float("inf"), tl.float32)
    n_fin = tl.zeros([], tl.float32)
    n_allow = tl.zeros([], tl.float32)
    for off in range(start, end, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < end
        hp = tl.load(pol_ptr + p_row + cols * s_pv, mask=mask, other=float("-inf")).to(tl.float32)
        m_p, s_p = _online(m_p, s_p, hp)
        if HAS_REF:
            hr = tl.load(ref_ptr + r_row + cols * s_rv, mask=mask, other=float("-inf")).to(tl.float32)
            m_r, s_r = _online(m_r, s_r, hr)
            z, banned = _interp(hp, tl.where(w != 0, hr, 0.0), w, temp, HAS_REF)
        else:
            z, banned = _interp(hp, hp, w, temp, HAS_REF)
        m_z, s_z = _online(m_z, s_z, z)
        finite = z > float("-inf")
        min_z = tl.minimum(min_z, tl.min(tl.where(finite, z, float("inf")), 0))
        n_fin += tl.sum(finite.to(tl.float32), 0)
        n_allow += tl.sum((mask & (banned == 0)).to(tl.float32), 0)

    rec = stats_ptr + (row * n_chunks + cid) * NSTAT
    tl.store(rec + 0, m_p)
    tl.store(rec + 1, s_p)
    tl.store(rec + 2, m_r)
    tl.store(rec + 3, s_r)
    tl.store(rec + 4, m_z)
    tl.store(rec + 5, s_z)
    tl.store(rec + 6, min_z)
    tl.store(rec + 7, n_fin)
    tl.store(rec + 8, n_allow)


@triton.jit
def _row_setup(stats_ptr, row, n_chunks, w, temp, p, k, HAS_REF: tl.constexpr, NSTAT: tl.constexpr, S_P2: tl.constexpr):
    """Row totals from the per-chunk statistics, the row status (all checks but the uniform's) and
    the initial search state. Every kernel calls this and gets the same numbers."""
    c = tl.arange(0, S_P2)
    cm = c < n_chunks
    rec = stats_ptr + (row * n_chunks + c) * NSTAT
    m_p, s_p = _merge(tl.load(rec + 0, mask=cm, other=float("-inf")), tl.load(rec + 1, mask=cm, other=0.0))
    m_r, s_r = _merge(tl.load(rec + 2, mask=cm, other=float("-inf")), tl.load(rec + 3, mask=cm, other=0.0))
    m_z, s_z = _merge(tl.load(rec + 4, mask=cm, other=float("-inf")), tl.load(rec + 5, mask=cm, other=0.0))
    min_z = tl.min(tl.load(rec + 6, mask=cm, other=float("inf")), 0)
    n_fin = tl.sum(tl.load(rec + 7, mask=cm, other=0.0), 0)
    n_allow = tl.sum(tl.load(rec + 8, mask=cm, other=0.0), 0)

    # RowStatus, first failing check wins (BAD_UNIFORM = 5 is slotted in by the sample kernel).
    st = tl.zeros([], tl.int32)
    st = tl.where((st == 0) & ~((w == w) & (tl.abs(w) < float("inf"))), 1, st)
    st = tl.where((st == 0) & ~((temp > 0) & (temp < float("inf"))), 2, st)
    st = tl.where((st == 0) & ~((p > 0) & (p <= 1)), 3, st)
    st = tl.where((st == 0) & (k < 0), 4, st)
    if not HAS_REF:
        st = tl.where((st == 0) & (w != 0), 6, st)
    st = tl.where((st == 0) & ((s_p != s_p) | (m_p == float("inf"))), 7, st)
    if HAS_REF:
        st = tl.where((st == 0) & (w != 0) & ((s_r != s_r) | (m_r == float("inf"))), 8, st)
    st = tl.where((st == 0) & ((s_z != s_z) | (m_z == float("inf")) | (n_fin != n_allow)), 9, st)
    st = tl.where((st == 0) & (n_allow == 0), 10, st)

    ok = st == 0
    k_on = ok & (k > 0) & (k < n_fin) & (min_z < m_z)
    p_on = ok & (p < 1) & (min_z < m_z)
    phase = tl.where(k_on, 0, tl.where(p_on, 1, 2))
    tgt = tl.where(k_on, k, p * s_z)
    src_r = tl.full([], -1, tl.int32)
    src_j = tl.zeros([], tl.int32)
    lse_p = m_p + tl.log(s_p)
    lse_r = m_r + tl.log(s_r)
    # state: phase, lo, b (largest value in [lo, hi)), tail mass and count at lo, target, source of
    # the per-chunk tail masses at lo, final threshold and its tail mass.
    state = (phase, min_z, m_z, s_z, n_fin, tgt, src_r, src_j, min_z, s_z)
    return st, lse_p, lse_r, m_z, state


@triton.jit
def _pivots(lo, b, NPIV: tl.constexpr):
    """NPIV increasing pivots in (lo, b], the last exactly b. Written so that nothing overflows
    even for |lo|, |b| near the float32 limit."""
    j = tl.arange(0, NPIV) + 1
    f = j.to(tl.float32) / NPIV
    h = b * 0.5 - lo * 0.5
    q = lo + h * f + h * f
    q = tl.minimum(tl.maximum(q, lo), b)
    return tl.where(j == NPIV, b, q)


@triton.jit
def _pivot_stats(
    pol_ptr,
    ref_ptr,
    p_row,
    r_row,
    start,
    end,
    s_pv,
    s_rv,
    w,
    temp,
    m_z,
    q,
    HAS_REF: tl.constexpr,
    NPIV: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Over columns [start, end): tail mass and count at each pivot, and the largest z below it."""
    a_mass = tl.zeros([NPIV], tl.float32)
    a_cnt = tl.zeros([NPIV], tl.float32)
    b_max = tl.full([NPIV], float("-inf"), tl.float32)
    for off in range(start, end, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        z = _load_z(pol_ptr, ref_ptr, p_row, r_row, cols, cols < end, s_pv, s_rv, w, temp, HAS_REF)
        e = tl.exp(z - m_z)
        ge = z[:, None] >= q[None, :]
        a_mass += tl.sum(tl.where(ge, e[:, None], 0.0), 0)
        a_cnt += tl.sum(ge.to(tl.float32), 0)
        b_max = tl.maximum(b_max, tl.max(tl.where(ge, float("-inf"), z[:, None]), 0))
    return a_mass, a_cnt, b_max


@triton.jit
def _advance(state, a_mass, a_cnt, b_max, q, r, p, m_z, NPIV: tl.constexpr):
    """One bisection step from the row's pivot results; a row in PH_DONE is left unchanged."""
    phase, lo, b, mass_lo, cnt_lo, tgt, src_r, src_j, t_fin, mass_fin = state
    j = tl.arange(0, NPIV) + 1
    feas = tl.where(phase == 0, a_cnt >= tgt, a_mass >= tgt)
    jj = tl.max(tl.where(feas, j, 0), 0)  # last pivot satisfying the rule; 0 stands for lo
    sel = j == jj
    nxt = j == jj + 1
    mass_j = tl.where(jj > 0, tl.sum(tl.where(sel, a_mass, 0.0), 0), mass_lo)
    cnt_j = tl.where(jj > 0, tl.sum(tl.where(sel, a_cnt, 0.0), 0), cnt_lo)
    q_j = tl.where(jj > 0, tl.sum(tl.where(sel, q, 0.0), 0), lo)
    cnt_nx = tl.sum(tl.where(nxt, a_cnt, 0.0), 0)
    b_nx = tl.max(tl.where(nxt, b_max, float("-inf")), 0)  # largest value in [q_j, q_{j+1})
    new_src_r = tl.where(jj > 0, r, src_r)
    new_src_j = tl.where(jj > 0, jj, src_j)

    top = jj == NPIV  # b itself satisfies the rule: it is t
    n_in = cnt_j - cnt_nx
    conv = top | (n_in <= 1)
    t = tl.where(top, b, tl.where(n_in >= 1, b_nx, q_j))
    # Top-k found and top-p to do: search again in [t_k, max z], against top_p * mass(z >= t_k).
    to_p = conv & (phase == 0) & (p < 1) & (t < m_z)
    new_phase = tl.where(conv, tl.where(to_p, 1, 2), phase)
    new_lo = tl.where(conv, t, q_j)
    new_b = tl.where(conv, m_z, b_nx)
    new_tgt = tl.where(to_p, p * mass_j, tgt)
    new_t = tl.where(conv, t, t_fin)
    new_mass = tl.where(conv, mass_j, mass_fin)

    act = phase < 2
    return (
        tl.where(act, new_phase, phase),
        tl.where(act, new_lo, lo),
        tl.where(act, new_b, b),
        tl.where(act, mass_j, mass_lo),
        tl.where(act, cnt_j, cnt_lo),
        tl.where(act, new_tgt, tgt),
        tl.where(act, new_src_r, src_r),
        tl.where(act, new_src_j, src_j),
        tl.where(act, new_t, t_fin),
        tl.where(act, new_mass, mass_fin),
    )


@triton.jit
def _store_state(ptr, state):
    """Save a row's search state (NSTATE float32 slots; the int fields are small and exact)."""
    for i in tl.static_range(10):
        tl.store(ptr + i, state[i].to(tl.float32))


@triton.jit
def _load_state(ptr):
    return (
        tl.load(ptr + 0).to(tl.int32),
        tl.load(ptr + 1),
        tl.load(ptr + 2),
        tl.load(ptr + 3),
        tl.load(ptr + 4),
        tl.load(ptr + 5),
        tl.load(ptr + 6).to(tl.int32),
        tl.load(ptr + 7).to(tl.int32),
        tl.load(ptr + 8),
        tl.load(ptr + 9),
    )


@triton.jit
def _state_after(
    state_ptr, rounds_ptr, r, row, n_chunks, B, p, m_z, NSTATE: tl.constexpr, NPIV: tl.constexpr, S_P2: tl.constexpr
):
    """The state after round r: the stored state before it, advanced by its per-chunk results."""
    state = _load_state(state_ptr + (r * B + row) * NSTATE)
    c = tl.arange(0, S_P2)[:, None]
    j = tl.arange(0, NPIV)[None, :]
    m = (c < n_chunks) & (j < NPIV)
    m = m & _splat_flag(state[0] < 2, m)  # finished rows wrote nothing in round r
    rec = rounds_ptr + ((r * B + row) * n_chunks + c) * (3 * NPIV) + j
    a_mass = tl.sum(tl.load(rec, mask=m, other=0.0), 0)
    a_cnt = tl.sum(tl.load(rec + NPIV, mask=m, other=0.0), 0)
    b_max = tl.max(tl.load(rec + 2 * NPIV, mask=m, other=float("-inf")), 0)
    q = _pivots(state[1], state[2], NPIV)
    return _advance(state, a_mass, a_cnt, b_max, q, r, p, m_z, NPIV)


@triton.jit(do_not_specialize=["w_arg", "t_arg", "p_arg", "k_arg", "r_now"])
def _round_kernel(
    pol_ptr,
    ref_ptr,
    w_arg,
    t_arg,
    p_arg,
    k_arg,
    stats_ptr,
    state_ptr,
    rounds_ptr,
    r_now,
    V,
    chunk,
    B,
    s_pb,
    s_pv,
    s_rb,
    s_rv,
    HAS_REF: tl.constexpr,
    W_PER_ROW: tl.constexpr,
    T_PER_ROW: tl.constexpr,
    P_PER_ROW: tl.constexpr,
    K_PER_ROW: tl.constexpr,
    NSTAT: tl.constexpr,
    NSTATE: tl.constexpr,
    NPIV: tl.constexpr,
    S_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    FIRST: tl.constexpr,
):
    row = tl.program_id(0)
    cid = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    w = _param(w_arg, row, W_PER_ROW)
    temp = _param(t_arg, row, T_PER_ROW)
    p = _param(p_arg, row, P_PER_ROW)
    k = _param(k_arg, row, K_PER_ROW)
    _, _, _, m_z, state = _row_setup(stats_ptr, row, n_chunks, w, temp, p, k, HAS_REF, NSTAT, S_P2)
    if not FIRST:
        state = _state_after(state_ptr, rounds_ptr, r_now - 1, row, n_chunks, B, p, m_z, NSTATE, NPIV, S_P2)
    if cid == 0:  # every program of the row holds the same state; one saves it for the next launch
        _store_state(state_ptr + (r_now * B + row) * NSTATE, state)
    if state[0] < 2:
        q = _pivots(state[1], state[2], NPIV)
        start = cid * chunk
        end = tl.minimum(start + chunk, V)
        a_mass, a_cnt, b_max = _pivot_stats(
            pol_ptr,
            ref_ptr,
            row.to(tl.int64) * s_pb,
            row.to(tl.int64) * s_rb,
            start,
            end,
            s_pv,
            s_rv,
            w,
            temp,
            m_z,
            q,
            HAS_REF,
            NPIV,
            BLOCK,
        )
        j = tl.arange(0, NPIV)
        rec = rounds_ptr + ((r_now * B + row) * n_chunks + cid) * (3 * NPIV) + j
        tl.store(rec, a_mass)
        tl.store(rec + NPIV, a_cnt)
        tl.store(rec + 2 * NPIV, b_max)


@triton.jit(do_not_specialize=["w_arg", "t_arg", "p_arg", "k_arg", "n_rounds"])
def _sample_kernel(
    pol_ptr,
    ref_ptr,
    w_arg,
    t_arg,
    p_arg,
    k_arg,
    u_ptr,
    stats_ptr,
    state_ptr,
    rounds_ptr,
    n_rounds,
    n_chunks,
    tok_ptr,
    plp_ptr,
    rlp_ptr,
    slp_ptr,
    status_ptr,
    V,
    chunk,
    B,
    s_pb,
    s_pv,
    s_rb,
    s_rv,
    HAS_REF: tl.constexpr,
    W_PER_ROW: tl.constexpr,
    T_PER_ROW: tl.constexpr,
    P_PER_ROW: tl.constexpr,
    K_PER_ROW: tl.constexpr,
    NSTAT: tl.constexpr,
    NSTATE: tl.constexpr,
    NPIV: tl.constexpr,
    S_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    PIV_BLOCK: tl.constexpr,
    MAX_STEPS: tl.constexpr,
    HAS_ROUNDS: tl.constexpr,
):
    row = tl.program_id(0)
    w = _param(w_arg, row, W_PER_ROW)
    temp = _param(t_arg, row, T_PER_ROW)
    p = _param(p_arg, row, P_PER_ROW)
    k = _param(k_arg, row, K_PER_ROW)
    u = tl.load(u_ptr + row).to(tl.float32)
    p_row = row.to(tl.int64) * s_pb
    r_row = row.to(tl.int64) * s_rb
    st, lse_p, lse_r, m_z, state = _row_setup(stats_ptr, row, n_chunks, w, temp, p, k, HAS_REF, NSTAT, S_P2)
    st = tl.where(((st == 0) | (st > 5)) & ~((u >= 0) & (u < 1)), 5, st)
    if HAS_ROUNDS:
        state = _state_after(state_ptr, rounds_ptr, n_rounds - 1, row, n_chunks, B, p, m_z, NSTATE, NPIV, S_P2)

    # Rows the split steps did not finish: go on over the whole row in this one program.
    steps = 0
    while (state[0] < 2) & (steps < MAX_STEPS):
        q = _pivots(state[1], state[2], NPIV)
        a_mass, a_cnt, b_max = _pivot_stats(
            pol_ptr, ref_ptr, p_row, r_row, 0, V, s_pv, s_rv, w, temp, m_z, q, HAS_REF, NPIV, PIV_BLOCK
        )
        state = _advance(state, a_mass, a_cnt, b_max, q, -2, p, m_z, NPIV)
        steps += 1
    phase, lo, _, mass_lo, _, _, src_r, src_j, t_fin, mass_fin = state
    # Unreachable for finite data (see the module docstring); if it were, keep the tail at lo.
    t_fin = tl.where(phase < 2, lo, t_fin)
    mass_fin = tl.where(phase < 2, mass_lo, mass_fin)

    # Pick the chunk that holds u * mass in the kept mass, from per-chunk tail masses at t.
    target = u * mass_fin
    c = tl.arange(0, S_P2)
    cm = c < n_chunks
    rec = stats_ptr + (row * n_chunks + c) * NSTAT
    from_stats = cm & _splat_flag(src_r == -1, c)
    from_round = cm & _splat_flag(src_r >= 0, c)
    mz_c = tl.load(rec + 4, mask=from_stats, other=float("-inf"))
    sz_c = tl.load(rec + 5, mask=from_stats, other=0.0)
    c_mass = sz_c * tl.exp(mz_c - tl.where(m_z == float("-inf"), 0.0, m_z))
    kept_rec = rounds_ptr + ((src_r * B + row) * n_chunks + c) * (3 * NPIV) + (src_j - 1)
    c_mass = tl.where(src_r >= 0, tl.load(kept_rec, mask=from_round, other=0.0), c_mass)
    c_cum = tl.cumsum(c_mass, 0)
    hit_c = tl.min(tl.where(cm & (c_cum > target), c, S_P2), 0)
    last_c = tl.max(tl.where(cm & (c_mass > 0), c, -1), 0)
    ch = tl.where(hit_c < S_P2, hit_c, last_c)
    before = tl.sum(tl.where(c == ch, c_cum - c_mass, 0.0), 0)
    full = src_r == -2
    lo_col = tl.where(full, 0, ch * chunk)
    hi_col = tl.where(full, V, tl.minimum(ch * chunk + chunk, V))
    rest = tl.where(full, target, target - before)

    # Inverse CDF over the kept tokens of [lo_col, hi_col), in vocabulary order.
    run = tl.zeros([], tl.float32)
    tok = tl.full([], -1, tl.int32)
    last = tl.full([], -1, tl.int32)
    found = st != 0  # bad rows scan nothing
    off = lo_col
    while (off < hi_col) & (found == 0):
        cols = off + tl.arange(0, BLOCK)
        z = _load_z(pol_ptr, ref_ptr, p_row, r_row, cols, cols < hi_col, s_pv, s_rv, w, temp, HAS_REF)
        keep = z >= t_fin
        e = tl.where(keep, tl.exp(z - m_z), 0.0)
        cum = run + tl.cumsum(e, 0)
        first = tl.min(tl.where(keep & (cum > rest), cols, 2147483647), 0)
        found = first < 2147483647
        tok = tl.where(found, first, tok)
        last = tl.maximum(last, tl.max(tl.where(e > 0, cols, -1), 0))
        run += tl.sum(e, 0)
        off += BLOCK
    tok = tl.where(found, tok, last)  # rounding left the sum short of the target: last kept token
    tok = tl.where(st == 0, tok, -1)

    safe = tl.maximum(tok, 0).to(tl.int64)
    hp_t = tl.load(pol_ptr + p_row + safe * s_pv).to(tl.float32)
    if HAS_REF:
        hr_t = tl.load(ref_ptr + r_row + safe * s_rv).to(tl.float32)
        z_t, _ = _interp(hp_t, tl.where(w != 0, hr_t, 0.0), w, temp, HAS_REF)
        tl.store(rlp_ptr + row, hr_t - lse_r)
    else:
        z_t, _ = _interp(hp_t, hp_t, w, temp, HAS_REF)
    tl.store(tok_ptr + row, tok.to(tl.int64))
    tl.store(plp_ptr + row, hp_t - lse_p)
    tl.store(slp_ptr + row, z_t - m_z - tl.log(mass_fin))
    tl.store(status_ptr + row, st)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _kernel_arg(x: float | int | torch.Tensor) -> tuple[object, bool]:
    if isinstance(x, torch.Tensor):
        return x.contiguous(), True
    return x, False


def sample_triton(
    inp: SamplingInputs,
    *,
    block: int | None = None,
    chunk: int | None = None,
    rounds: int | None = None,
    npiv: int = 16,
    max_steps: int = 128,
    num_warps: int | None = None,
) -> BackendOutput:
    """Launch the three kernels. The keyword arguments are tuning knobs (tests use tiny blocks to
    exercise several blocks and chunks per row on small vocabularies); defaults suit a GPU."""
    batch, vocab, device = inp.batch_size, inp.vocab_size, inp.device
    on_gpu = device.type == "cuda"
    if block is None:
        block = 1024 if on_gpu else 64
    if chunk is None:
        # Enough (row, chunk) programs to fill the GPU a few times over, whatever the batch size.
        programs = 4 * _sm_count(device.index or 0) if on_gpu else 4
        n_chunks = max(1, min(triton.cdiv(programs, batch), triton.cdiv(vocab, block)))
        chunk = triton.cdiv(triton.cdiv(vocab, n_chunks), block) * block
    if chunk % block:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block ({block})")
    n_chunks = triton.cdiv(vocab, chunk)
    if rounds is None:
        # Rounds of 16 pivots a search phase typically needs at V ~ 128k (simulated on synthetic logits:
        # top-p alone 2-6, top-k alone 3-4); rows not done by then finish in the sample kernel.
        k_possible = isinstance(inp.top_k, torch.Tensor) or inp.top_k > 0
        p_possible = isinstance(inp.top_p, torch.Tensor) or inp.top_p < 1
        rounds = ROUNDS_PER_PHASE * (int(k_possible) + int(p_possible))
    if num_warps is None:
        num_warps = 8 if on_gpu else 1
    round_block = min(block, 256) if on_gpu else block

    policy, ref = inp.policy, inp.ref
    has_ref = ref is not None
    ref_arg = ref if has_ref else policy  # never read without a reference
    w, w_rows = _kernel_arg(inp.w)
    temp, t_rows = _kernel_arg(inp.temperature)
    top_p, p_rows = _kernel_arg(inp.top_p)
    top_k, k_rows = _kernel_arg(inp.top_k)
    s_pb, s_pv = policy.stride()
    s_rb, s_rv = ref_arg.stride()
    s_p2 = _next_pow2(n_chunks)

    stats = torch.empty(batch * n_chunks * NSTAT, dtype=torch.float32, device=device)
    round_ws = torch.empty(max(rounds, 1) * batch * n_chunks * 3 * npiv, dtype=torch.float32, device=device)
    state_ws = torch.empty(max(rounds, 1) * batch * NSTATE, dtype=torch.float32, device=device)
    token = torch.empty(batch, dtype=torch.int64, device=device)
    policy_lp = torch.empty(batch, dtype=torch.float32, device=device)
    ref_lp = torch.empty(batch, dtype=torch.float32, device=device) if has_ref else None
    sampled_lp = torch.empty(batch, dtype=torch.float32, device=device)
    status = torch.empty(batch, dtype=torch.int32, device=device)
    # Without FMA contraction z is rounded exactly as in the torch path, so ties and thresholds match.
    opts = {"num_warps": num_warps, "enable_fp_fusion": False}

    _stats_kernel[(batch, n_chunks)](
        policy, ref_arg, w, temp, stats, vocab, chunk, s_pb, s_pv, s_rb, s_rv,
        HAS_REF=has_ref, W_PER_ROW=w_rows, T_PER_ROW=t_rows, NSTAT=NSTAT, BLOCK=block, **opts,
    )  # fmt: skip
    params = dict(HAS_REF=has_ref, W_PER_ROW=w_rows, T_PER_ROW=t_rows, P_PER_ROW=p_rows, K_PER_ROW=k_rows)
    for r in range(rounds):
        _round_kernel[(batch, n_chunks)](
            policy, ref_arg, w, temp, top_p, top_k, stats, state_ws, round_ws, r, vocab, chunk, batch,
            s_pb, s_pv, s_rb, s_rv, **params, NSTAT=NSTAT, NSTATE=NSTATE, NPIV=npiv, S_P2=s_p2, BLOCK=round_block,
            FIRST=r == 0, **opts,
        )  # fmt: skip
    _sample_kernel[(batch,)](
        policy, ref_arg, w, temp, top_p, top_k, inp.uniform, stats, state_ws, round_ws, rounds, n_chunks,
        token, policy_lp, ref_lp if has_ref else policy_lp, sampled_lp, status, vocab, chunk, batch,
        s_pb, s_pv, s_rb, s_rv, **params, NSTAT=NSTAT, NSTATE=NSTATE, NPIV=npiv, S_P2=s_p2, BLOCK=block,
        PIV_BLOCK=round_block, MAX_STEPS=max_steps, HAS_ROUNDS=rounds > 0, **opts,
    )  # fmt: skip
    return BackendOutput(token, policy_lp, ref_lp, sampled_lp, status)


__all__ = ["RowStatus", "sample_triton"]
