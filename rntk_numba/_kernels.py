"""The jitted core (spec sections 3 and 3.1).

Tier 1 -- ``_self_walk``: per-sequence self-kernels Sigma[l](t, t)(x, x) (same sample,
A[l](0, 0) = sigma_h^2), and the diagonal Theta(x, x), K(x, x), O(L T m) per sequence.

Tier 2 -- ``_tile_lockstep``: the end-aligned diagonal walk (spec 3.1) for every pair
of a tile, one row against ``lanes`` columns in lock-step so that the loop over lanes
is vectorised (time-major structure of arrays, branch-free dual activations). A lane
whose walk is shorter than its batch's starts later; until then its state is reset at
every step (its recurrent inputs are selected to 0), which makes every pair's result
independent of which batch, tile, thread or process computed it: bit for bit.

All arrays are float64 / int64 and C-contiguous. Nothing here allocates per pair.
"""

import numpy as np

from ._dual import erf_dual_cross, erf_dual_self, relu_dual_cross, relu_dual_self
from ._jit import jit, jit_inline

RELU = 0
ERF = 1
#: Read-outs: the spec's (the last time step), or the mean over the walk (an extension:
#: see ``rntk_numba.params.RNTK``, ``readout="mean"``).
LAST = 0
MEAN = 1
#: Self-kernel variances below this count as 0 for the relu dual (1/sqrt(a) * 1/sqrt(b)
#: must not overflow).
TINY_VARIANCE = 1e-300


@jit
def _self_walk(values, offsets, lengths, n_layers, act, sw2, su2, sb2, sh2, sv2,
               readout):
    """Self-kernels of every sequence.

    Returns
    -------
    sig : (n_layers, total_T) -- Sigma[l](t, t)(x, x) at every position of ``values``
    diag_ntk, diag_nngp : (N,) -- Theta(x, x) and K(x, x), x as the same sample (with
        ``readout == MEAN``: their means over the prefixes x_1..t, t = 1..T)
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
        acc_k = 0.0
        acc_t = 0.0
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
            if readout == MEAN:
                k_t = sv2 * v[n_layers]
                acc_k += k_t
                acc_t += k_t + sv2 * vp[n_layers] * th[n_layers]
        if readout == MEAN:
            diag_nngp[i] = acc_k / lengths[i]
            diag_ntk[i] = acc_t / lengths[i]
        else:
            diag_nngp[i] = sv2 * v[n_layers]
            diag_ntk[i] = diag_nngp[i] + sv2 * vp[n_layers] * th[n_layers]
    return sig, diag_ntk, diag_nngp


@jit
def _self_factors(sig, act):
    """Per-position factors of the cross dual: relu -> (sqrt(a), 1/sqrt(a) or 0);
    erf -> (1/sqrt(1 + 2a), sqrt(a))."""
    f1 = np.empty_like(sig)
    f2 = np.empty_like(sig)
    for l in range(sig.shape[0]):
        for k in range(sig.shape[1]):
            a = sig[l, k]
            if act == RELU:
                r = np.sqrt(a)
                f1[l, k] = r
                # below TINY_VARIANCE the product of two inverse square roots would
                # overflow: treat the variance as 0 (project choice rho := 0; V is
                # below ~1e-300 there anyway)
                f2[l, k] = 1.0 / r if a > TINY_VARIANCE else 0.0
            else:
                f1[l, k] = 1.0 / np.sqrt(1.0 + 2.0 * a)
                f2[l, k] = np.sqrt(a)
    return f1, f2


@jit_inline
def _cell(started, v_prev, vp_prev, th_prev, b, bp_th, sw2, su2, sb2):
    """Sigma and Theta at one cell of the walk (spec 3): the NNGP and NTK updates.

    ``(v_prev, vp_prev, th_prev)``: V, V', Theta of this layer at the previous cell;
    ``b, bp_th``: B and B' * Theta from the layer below at this cell. Before and at its
    first cell a pair has no past: the recurrent terms are SELECTED to 0 (never
    multiplied by a 0/1 mask, so an overflow left in the lane by another pair cannot
    leak in as 0 * inf = NaN).
    """
    a = v_prev if started else 0.0
    a_th = vp_prev * th_prev if started else 0.0
    sigma = sw2 * a + su2 * b + sb2
    theta = sigma + sw2 * a_th + su2 * bp_th
    return sigma, theta


@jit
def _tile_lockstep(values, offsets, lengths, f1, f2, rows, cols, diagonal, n_layers,
                   act, sw2, su2, sb2, sv2, readout, lanes, out_ntk, out_nngp):
    """Theta and K for every pair (rows[a], cols[b]) of a tile.

    Lanes are ``lanes`` consecutive columns walked in lock-step against one row. The
    tile's column sequences are first copied into a time-major, END-ALIGNED layout
    (padded time u = Tmax - T + t), in which the diagonal walk of any pair visits the
    same u on both sequences (spec 3.1): a lane's inputs at step u are contiguous
    vector loads and the row's are broadcast scalars. ``cols`` must be sorted by
    decreasing length so that the lanes of a batch have similar walk lengths.
    A lane whose walk starts later than the batch's is reset at every step until its
    start, so each entry is independent of the batch it ran in.

    ``diagonal``: rows and cols are the same list (a diagonal tile of a symmetric
    Gram); only b > a is computed. Results: out_*[a, b], shape (len(rows), len(cols)).

    ``readout == MEAN``: the read-out of every cell of a pair's walk (the kernels of the
    end-aligned prefix pairs) is summed, cells before a lane's start selected to 0, and
    the sum divided by sqrt(T T').
    """
    nr = rows.shape[0]
    nc = cols.shape[0]
    m = values.shape[1]
    inv_m = 1.0 / m
    L = n_layers
    tmax = 0
    for b in range(nc):
        if lengths[cols[b]] > tmax:
            tmax = lengths[cols[b]]
    for a in range(nr):
        if lengths[rows[a]] > tmax:
            tmax = lengths[rows[a]]
    nb = (nc + lanes - 1) // lanes
    ncp = nb * lanes
    # end-aligned, time-major columns; padding (before a series' start and the idle
    # lanes past nc) is 0, which keeps every padded computation finite
    cx = np.zeros((tmax, m, ncp))
    cf1 = np.zeros((L, tmax, ncp))
    cf2 = np.zeros((L, tmax, ncp))
    clen = np.zeros(ncp, dtype=np.int64)
    for b in range(nc):
        j = cols[b]
        tj = lengths[j]
        clen[b] = tj
        shift = tmax - tj
        for t in range(tj):
            for c in range(m):
                cx[shift + t, c, b] = values[offsets[j] + t, c]
            for l in range(L):
                cf1[l, shift + t, b] = f1[l, offsets[j] + t]
                cf2[l, shift + t, b] = f2[l, offsets[j] + t]
    # lane state per layer at the latest cell: V, V', Theta
    vs = np.zeros((L, lanes))
    vps = np.zeros((L, lanes))
    ths = np.zeros((L, lanes))
    # what a layer takes from the layer below at the current cell: B and B' * Theta,
    # copied into arrays of their own. The main loop then writes only the three state
    # rows and reads few other arrays, which keeps LLVM's runtime alias checks within
    # its limit: without the copy, the loop stays scalar for layers >= 2 (5x slower).
    in_b = np.zeros(lanes)
    in_g = np.zeros(lanes)
    acc_k = np.zeros(lanes)             # MEAN read-out: sums over the walk
    acc_t = np.zeros(lanes)
    ustart = np.empty(lanes, dtype=np.int64)
    for bi in range(nb):
        b0 = bi * lanes
        for a in range(nr):
            if diagonal and a >= b0 + lanes - 1:
                break                       # no b > a left in this batch
            i = rows[a]
            ti = lengths[i]
            kmax = min(ti, clen[b0])        # cols sorted: the batch's longest is first
            if kmax == 0:
                continue
            base_i = offsets[i] - (tmax - ti)   # packed index of row i at padded time u
            for p in range(lanes):
                w = min(ti, clen[b0 + p])
                ustart[p] = tmax - w        # idle lanes (w = 0) never start
                acc_k[p] = 0.0
                acc_t[p] = 0.0
            for u in range(tmax - kmax, tmax):
                pos = base_i + u
                # input layer: B[1] = <x_t, x'_t'> / m, B'[1] = 0
                for p in range(lanes):
                    in_b[p] = 0.0
                    in_g[p] = 0.0
                for c in range(m):
                    xi = values[pos, c]
                    xc = cx[u, c]
                    for p in range(lanes):
                        in_b[p] += xi * xc[b0 + p]
                for p in range(lanes):
                    in_b[p] *= inv_m
                for l in range(L):
                    v_l = vs[l]
                    vp_l = vps[l]
                    th_l = ths[l]
                    r1 = f1[l, pos]
                    r2 = f2[l, pos]
                    c1 = cf1[l, u]
                    c2 = cf2[l, u]
                    # one loop per activation: the branch stays outside the
                    # vectorised loop
                    if act == RELU:
                        for p in range(lanes):
                            cc, theta = _cell(u > ustart[p], v_l[p], vp_l[p], th_l[p],
                                              in_b[p], in_g[p], sw2, su2, sb2)
                            v_l[p], vp_l[p] = relu_dual_cross(cc, r1 * c1[b0 + p],
                                                              r2 * c2[b0 + p])
                            th_l[p] = theta
                    else:
                        for p in range(lanes):
                            cc, theta = _cell(u > ustart[p], v_l[p], vp_l[p], th_l[p],
                                              in_b[p], in_g[p], sw2, su2, sb2)
                            v_l[p], vp_l[p] = erf_dual_cross(cc, r1 * c1[b0 + p],
                                                             r2 * c2[b0 + p])
                            th_l[p] = theta
                    if l + 1 < L:
                        for p in range(lanes):
                            in_b[p] = v_l[p]
                            in_g[p] = vp_l[p] * th_l[p]
                if readout == MEAN:
                    v_t = vs[L - 1]
                    vp_t = vps[L - 1]
                    th_t = ths[L - 1]
                    for p in range(lanes):
                        k_c = sv2 * v_t[p]
                        t_c = k_c + sv2 * vp_t[p] * th_t[p]
                        inside = u >= ustart[p]     # selected, never multiplied
                        acc_k[p] += k_c if inside else 0.0
                        acc_t[p] += t_c if inside else 0.0
            for p in range(min(lanes, nc - b0)):
                b = b0 + p
                if diagonal and b <= a:
                    continue
                if readout == MEAN:
                    scale = 1.0 / np.sqrt(float(ti) * float(clen[b]))
                    out_nngp[a, b] = acc_k[p] * scale
                    out_ntk[a, b] = acc_t[p] * scale
                else:
                    k_out = sv2 * vs[L - 1, p]
                    out_nngp[a, b] = k_out
                    out_ntk[a, b] = k_out + sv2 * vps[L - 1, p] * ths[L - 1, p]
