"""Jitted forward-mode derivative of the RNTK / NNGP recursion (spec sections 3 and 4).

For a pair of DIFFERENT samples (x, y) (spec 3.2: no ``sigma_h`` term in the cross
kernel) this walks the recursion of spec section 3 once, carrying next to every
quantity that depends on x its tangent: the vector of its partial derivatives with
respect to every input entry ``x[r, c]`` (``r = 0..T-1``, ``c = 0..m-1``, flattened to
``r * m + c``). At the end the tangent of the output is the gradient
``d k(x, y) / d x``, exact up to rounding: forward-mode differentiation, no step size.

Two walks run interleaved over the time steps of x:

* the self walk of x (x as the same sample, A[l](0, 0) = sh^2): Sigma[l](t, t)(x, x)
  and its tangent, needed by the 2x2 blocks of the cross walk;
* the end-aligned cross walk (spec 3.1): Sigma[l](t, t'), V, V' of the block and
  Theta[l](t, t'), each with its tangent, started when the diagonal reaches x's step.

y's self-kernels carry no tangent; they are walked once at the start.

Derivatives of the dual activations of Lam = [[a, c], [c, b]] with respect to a and c
(b belongs to y). By Price's theorem dV/dc = V' for every phi. The others:

relu (det = ab - c^2, theta = arccos(c / sqrt(ab)))::

    dV/da  = sqrt(det) / (4 pi a)
    dV'/dc = 1 / (2 pi sqrt(det))
    dV'/da = -c / (4 pi a sqrt(det))

erf (P = (1 + 2a)(1 + 2b), Q = P - 4c^2)::

    dV/da  = -(4/pi) c (1 + 2b) / (P sqrt(Q))
    dV'/dc = (16/pi) c Q^(-3/2)
    dV'/da = -(4/pi) (1 + 2b) Q^(-3/2)

Guards (named, documented conventions where the function is not differentiable):

* relu, ``a * b == 0``: the project convention V = 0, V' = 1/4 (spec 2) is locally
  constant; all derivatives are taken as 0.
* relu, rank-one block (``det <= DEGENERATE * a * b``, i.e. |rho| = 1 up to rounding):
  V' jumps between 0 and 1/2 across rho = +-1 and its chain-rule derivative is
  infinity times zero. Such blocks arise exactly, e.g. at the first aligned step of two
  univariate series of equal length with sb = sh = 0, where every perturbation of x
  keeps the block rank one and V' is locally constant; dV'/da = dV'/dc := 0 there.
  dV/da = 0 and dV/dc = V' are exact limits.

All arrays float64 and C-contiguous; nothing here allocates per time step.
"""

import math

import numpy as np

from ._jit import jit

RELU = 0
ERF = 1

#: relu blocks with ``ab - c^2 <= DEGENERATE * ab`` are treated as rank one.
DEGENERATE = 1e-12

_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_4PI = 1.0 / (4.0 * math.pi)
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI = 4.0 / math.pi
_SIXTEEN_OVER_PI = 16.0 / math.pi


@jit
def _dual_self_deriv(a, act):
    """(V, dV/da) of a same-sample block [[a, a], [a, a]]."""
    if act == RELU:
        if a > 0.0:
            return 0.5 * a, 0.5
        return 0.0, 0.0
    q = 1.0 + 2.0 * a
    return (_TWO_OVER_PI * math.asin(2.0 * a / q),
            _FOUR_OVER_PI / (q * math.sqrt(1.0 + 4.0 * a)))


@jit
def _dual_cross_deriv(a, b, c, act):
    """(V, V', dV/da, dV/dc, dV'/da, dV'/dc) of [[a, c], [c, b]]."""
    if act == RELU:
        ab = a * b
        if not ab > 0.0:
            return 0.0, 0.25, 0.0, 0.0, 0.0, 0.0
        root = math.sqrt(ab)
        rho = c / root
        if rho > 1.0:
            rho = 1.0
        elif rho < -1.0:
            rho = -1.0
        det = ab - c * c
        if det < 0.0:
            det = 0.0
        sdet = math.sqrt(det)
        pmt = math.pi - math.acos(rho)
        v = _INV_2PI * (sdet + pmt * c)
        vp = _INV_2PI * pmt
        dv_da = _INV_4PI * sdet / a
        if det <= DEGENERATE * ab:
            return v, vp, dv_da, vp, 0.0, 0.0
        return v, vp, dv_da, vp, -_INV_4PI * c / (a * sdet), _INV_2PI / sdet
    qa = 1.0 + 2.0 * a
    qb = 1.0 + 2.0 * b
    p = qa * qb
    q = p - 4.0 * c * c
    if q < 1e-300:
        q = 1e-300
    z = 2.0 * c / math.sqrt(p)
    if z > 1.0:
        z = 1.0
    elif z < -1.0:
        z = -1.0
    sq = math.sqrt(q)
    q32 = q * sq
    v = _TWO_OVER_PI * math.asin(z)
    vp = _FOUR_OVER_PI / sq
    return (v, vp, -_FOUR_OVER_PI * c * qb / (p * sq), vp,
            -_FOUR_OVER_PI * qb / q32, _SIXTEEN_OVER_PI * c / q32)


@jit
def _pair_gradient(x, y, n_layers, act, sw2, su2, sb2, sh2, sv2, want_ntk, grad):
    """Kernel value of the pair (x, y) of different samples and its gradient in x.

    Parameters
    ----------
    x : (T, m), y : (T2, m)
    want_ntk : bool -- Theta (True) or the NNGP kernel K (False)
    grad : (T * m,) output, overwritten with d k / d x (row-major (T, m))

    Returns
    -------
    float -- k(x, y)
    """
    T = x.shape[0]
    m = x.shape[1]
    T2 = y.shape[0]
    L = n_layers
    inv_m = 1.0 / m
    D = T * m
    # -- self walk of y (no tangent) -----------------------------------------------
    sy = np.empty((L, T2))
    prev = np.empty(L)
    for t in range(T2):
        acc = 0.0
        for c in range(m):
            acc += y[t, c] * y[t, c]
        b_lo = acc * inv_m
        for l in range(L):
            a_term = sh2 if t == 0 else _dual_self_deriv(prev[l], act)[0]
            s = sw2 * a_term + su2 * b_lo + sb2
            sy[l, t] = s
            prev[l] = s
            b_lo = _dual_self_deriv(s, act)[0]
    # -- state of x's self walk and of the cross walk, with tangents ---------------
    sx = np.zeros(L)               # Sigma[l](t, t)(x, x) at the current t
    dsx = np.zeros((L, D))
    cv = np.zeros(L)               # V of the cross block at the previous aligned step
    dcv = np.zeros((L, D))
    cvp = np.zeros(L)              # V'
    dcvp = np.zeros((L, D))
    th = np.zeros(L)               # Theta[l] at the previous aligned step
    dth = np.zeros((L, D))
    db_lo = np.zeros(D)            # tangent of the layer-below input (current step)
    dbp_lo = np.zeros(D)
    dth_lo = np.zeros(D)
    ds_new = np.zeros(D)
    dth_new = np.zeros(D)
    off = T - T2                   # cross step at x's t pairs with y's t - off
    t0 = off if off > 0 else 0
    for t in range(T):
        hi = (t + 1) * m           # tangents vanish beyond x's step t
        # self walk of x at step t
        acc = 0.0
        for c in range(m):
            acc += x[t, c] * x[t, c]
        b_lo = acc * inv_m
        for r in range(hi):
            db_lo[r] = 0.0
        for c in range(m):
            db_lo[t * m + c] = 2.0 * x[t, c] * inv_m
        for l in range(L):
            if t == 0:
                s = sw2 * sh2 + su2 * b_lo + sb2
                for r in range(hi):
                    dsx[l, r] = su2 * db_lo[r]
            else:
                va, dva = _dual_self_deriv(sx[l], act)
                s = sw2 * va + su2 * b_lo + sb2
                for r in range(hi):
                    dsx[l, r] = sw2 * dva * dsx[l, r] + su2 * db_lo[r]
            sx[l] = s
            b_lo, db = _dual_self_deriv(s, act)
            for r in range(hi):
                db_lo[r] = db * dsx[l, r]
        if t < t0:
            continue
        # cross walk at (t, t - off)
        first = t == t0
        t2 = t - off
        acc = 0.0
        for c in range(m):
            acc += x[t, c] * y[t2, c]
        b_lo = acc * inv_m
        bp_lo = 0.0                # B'[1] = 0: the input is not trained
        th_lo = 0.0
        for r in range(hi):
            db_lo[r] = 0.0
            dbp_lo[r] = 0.0
            dth_lo[r] = 0.0
        for c in range(m):
            db_lo[t * m + c] = y[t2, c] * inv_m
        for l in range(L):
            if first:
                cc = su2 * b_lo + sb2
                tt = cc + su2 * bp_lo * th_lo
                for r in range(hi):
                    ds_new[r] = su2 * db_lo[r]
                    dth_new[r] = ds_new[r] + su2 * (dbp_lo[r] * th_lo
                                                    + bp_lo * dth_lo[r])
            else:
                cc = sw2 * cv[l] + su2 * b_lo + sb2
                tt = cc + sw2 * cvp[l] * th[l] + su2 * bp_lo * th_lo
                for r in range(hi):
                    ds_new[r] = sw2 * dcv[l, r] + su2 * db_lo[r]
                    dth_new[r] = (ds_new[r]
                                  + sw2 * (dcvp[l, r] * th[l] + cvp[l] * dth[l, r])
                                  + su2 * (dbp_lo[r] * th_lo + bp_lo * dth_lo[r]))
            v, vp, dv_da, dv_dc, dvp_da, dvp_dc = _dual_cross_deriv(
                sx[l], sy[l, t2], cc, act)
            cv[l] = v
            cvp[l] = vp
            th[l] = tt
            for r in range(hi):
                dcv[l, r] = dv_da * dsx[l, r] + dv_dc * ds_new[r]
                dcvp[l, r] = dvp_da * dsx[l, r] + dvp_dc * ds_new[r]
                dth[l, r] = dth_new[r]
                db_lo[r] = dcv[l, r]
                dbp_lo[r] = dcvp[l, r]
                dth_lo[r] = dth_new[r]
            b_lo = v
            bp_lo = vp
            th_lo = tt
    # -- read-out ------------------------------------------------------------------
    top = L - 1
    value = sv2 * cv[top]
    for r in range(D):
        grad[r] = sv2 * dcv[top, r]
    if want_ntk:
        value += sv2 * cvp[top] * th[top]
        for r in range(D):
            grad[r] += sv2 * (dcvp[top, r] * th[top] + cvp[top] * dth[top, r])
    return value


@jit
def _batch_gradient(xv, xoff, yv, yoff, ix, iy, n_layers, act, sw2, su2, sb2, sh2,
                    sv2, want_ntk, goff, values, grads):
    """``_pair_gradient`` for the pairs (X[ix[p]], Y[iy[p]]), p = 0..P-1.

    ``xv``/``yv`` are packed values (sum T, m) with offsets ``xoff``/``yoff``; pair p's
    gradient goes to ``grads[goff[p]:goff[p+1]]`` (flattened (T, m)).
    """
    for p in range(ix.shape[0]):
        i = ix[p]
        j = iy[p]
        x = xv[xoff[i]:xoff[i + 1]]
        y = yv[yoff[j]:yoff[j + 1]]
        values[p] = _pair_gradient(x, y, n_layers, act, sw2, su2, sb2, sh2, sv2,
                                   want_ntk, grads[goff[p]:goff[p + 1]])
