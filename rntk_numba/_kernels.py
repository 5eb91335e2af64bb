"""The jitted core (spec sections 3 and 3.1).

Tier 1 -- ``_self_walk``: per-sequence self-kernels Sigma[l](t, t)(x, x) (same sample,
A[l](0, 0) = sigma_h^2), and the diagonal Theta(x, x), K(x, x), O(L T m) per sequence.

Tier 2 -- ``_pairs_lockstep``: the end-aligned diagonal walk (spec 3.1) for a list of
pairs, run in lock-step over ``lanes`` pairs at a time so that the loop over lanes is
vectorised (structure of arrays, branch-free dual activations). Lane p walks its
shorter sequence's T' cells; lanes of one batch are end-aligned, so a lane whose T' is
smaller than the batch's longest starts later; until then its state is reset at every
step (``mask`` = 0), which makes every pair's result independent of which batch, tile,
thread or process computed it: bit for bit.

All arrays are float64 / int64 and C-contiguous. Nothing here allocates per pair.
"""

import numpy as np

from ._dual import erf_dual_cross, erf_dual_self, relu_dual_cross, relu_dual_self
from ._jit import jit

RELU = 0
ERF = 1


@jit
def _self_walk(values, offsets, lengths, n_layers, act, sw2, su2, sb2, sh2, sv2):
    """Self-kernels of every sequence.

    Returns
    -------
    sig : (n_layers, total_T) -- Sigma[l](t, t)(x, x) at every position of ``values``
    diag_ntk, diag_nngp : (N,) -- Theta(x, x) and K(x, x), x as the same sample
    """
    n = lengths.shape[0]
    m = values.shape[1]
    total = values.shape[0]
    sig = np.empty((n_layers, total))
    diag_ntk = np.empty(n)
    diag_nngp = np.empty(n)
    v = np.zeros(n_layers + 1)      # V at the latest cell, per layer (row 0: input)
    vp = np.zeros(n_layers + 1)     # V'
    th = np.zeros(n_layers + 1)     # Theta
    for i in range(n):
        off = offsets[i]
        for t in range(lengths[i]):
            pos = off + t
            acc = 0.0
            for c in range(m):
                acc += values[pos, c] * values[pos, c]
            v[0] = acc / m
            vp[0] = 0.0
            th[0] = 0.0
            for l in range(1, n_layers + 1):
                if t == 0:
                    a_term = sh2
                    ath_term = 0.0
                else:
                    a_term = v[l]
                    ath_term = vp[l] * th[l]
                s = sw2 * a_term + su2 * v[l - 1] + sb2
                theta = s + sw2 * ath_term + su2 * (vp[l - 1] * th[l - 1])
                if act == RELU:
                    vv, vvp = relu_dual_self(s)
                else:
                    vv, vvp = erf_dual_self(s)
                sig[l - 1, pos] = s
                v[l] = vv
                vp[l] = vvp
                th[l] = theta
        diag_nngp[i] = sv2 * v[n_layers]
        diag_ntk[i] = diag_nngp[i] + sv2 * vp[n_layers] * th[n_layers]
    return sig, diag_ntk, diag_nngp


@jit
def _self_factors(sig, act):
    """Per-position factors of the cross dual: relu -> (sqrt(a), 1/sqrt(a) or 0);
    erf -> (1/sqrt(1 + 2a), unused)."""
    f1 = np.empty_like(sig)
    f2 = np.empty_like(sig)
    for l in range(sig.shape[0]):
        for k in range(sig.shape[1]):
            a = sig[l, k]
            if act == RELU:
                r = np.sqrt(a)
                f1[l, k] = r
                f2[l, k] = 1.0 / r if a > 0.0 else 0.0
            else:
                f1[l, k] = 1.0 / np.sqrt(1.0 + 2.0 * a)
                f2[l, k] = 0.0
    return f1, f2


@jit
def _pairs_lockstep(values, offsets, lengths, f1, f2, first, second, n_layers, act,
                    sw2, su2, sb2, sv2, lanes, out_ntk, out_nngp):
    """Theta and K for the pairs (first[q], second[q]), q = 0..npairs-1.

    ``first`` / ``second`` index sequences of the packed set (values, offsets,
    lengths); pairs should be sorted by their shorter length so that a batch of
    ``lanes`` pairs wastes few padded steps. Results go to out_ntk[q], out_nngp[q].
    """
    npairs = first.shape[0]
    m = values.shape[1]
    inv_m = 1.0 / m
    L = n_layers
    # lane state, row 0 = the input layer (V = <x_t, x'_t'> / m, V' = Theta = 0)
    vs = np.zeros((L + 1, lanes))
    vps = np.zeros((L + 1, lanes))
    ths = np.zeros((L + 1, lanes))
    g1 = np.empty((L, lanes))          # product of f1 factors of the two sequences
    g2 = np.empty((L, lanes))          # product of f2 factors
    mask = np.empty(lanes)
    off_a = np.empty(lanes, dtype=np.int64)
    off_b = np.empty(lanes, dtype=np.int64)
    len_b = np.empty(lanes, dtype=np.int64)
    tau = np.empty(lanes, dtype=np.int64)
    for q0 in range(0, npairs, lanes):
        nl = min(lanes, npairs - q0)
        kmax = 0
        for p in range(lanes):
            q = q0 + (p if p < nl else nl - 1)   # idle lanes repeat the last pair
            i = first[q]
            j = second[q]
            if lengths[i] < lengths[j]:
                i, j = j, i
            off_a[p] = offsets[i]
            off_b[p] = offsets[j]
            len_b[p] = lengths[j]
            tau[p] = lengths[i] - lengths[j]
            if lengths[j] > kmax:
                kmax = lengths[j]
        for k in range(kmax):
            # gather (scalar): this step's inputs for every lane
            for p in range(lanes):
                s = k - (kmax - len_b[p])          # 0-based cell on the short series
                mask[p] = 1.0 if s >= 1 else 0.0
                if s < 0:
                    s = 0
                pa = off_a[p] + s + tau[p]
                pb = off_b[p] + s
                acc = 0.0
                for c in range(m):
                    acc += values[pa, c] * values[pb, c]
                vs[0, p] = acc * inv_m
                for l in range(L):
                    g1[l, p] = f1[l, pa] * f1[l, pb]
                    g2[l, p] = f2[l, pa] * f2[l, pb]
            # compute (vectorised over lanes), layer by layer
            for l in range(1, L + 1):
                v_lo = vs[l - 1]
                vp_lo = vps[l - 1]
                th_lo = ths[l - 1]
                v_l = vs[l]
                vp_l = vps[l]
                th_l = ths[l]
                ga = g1[l - 1]
                gb = g2[l - 1]
                if act == RELU:
                    for p in range(lanes):
                        mk = mask[p]
                        c = sw2 * (mk * v_l[p]) + su2 * v_lo[p] + sb2
                        theta = (c + sw2 * (mk * (vp_l[p] * th_l[p]))
                                 + su2 * (vp_lo[p] * th_lo[p]))
                        vv, vvp = relu_dual_cross(c, ga[p], gb[p])
                        v_l[p] = vv
                        vp_l[p] = vvp
                        th_l[p] = theta
                else:
                    for p in range(lanes):
                        mk = mask[p]
                        c = sw2 * (mk * v_l[p]) + su2 * v_lo[p] + sb2
                        theta = (c + sw2 * (mk * (vp_l[p] * th_l[p]))
                                 + su2 * (vp_lo[p] * th_lo[p]))
                        vv, vvp = erf_dual_cross(c, ga[p])
                        v_l[p] = vv
                        vp_l[p] = vvp
                        th_l[p] = theta
        for p in range(nl):
            k_out = sv2 * vs[L, p]
            out_nngp[q0 + p] = k_out
            out_ntk[q0 + p] = k_out + sv2 * vps[L, p] * ths[L, p]
