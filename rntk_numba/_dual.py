"""Dual activations V(Lam) = E[phi(u) phi(v)] and V'(Lam) = E[phi'(u) phi'(v)] (spec 2).

Two families of functions:

* ``*_self``: the exact diagonal forms for a "same sample" block (rho == 1 exactly,
  spec section 2 "Conditioning"), used by the per-sequence self-kernel walk;
* ``*_cross``: the general 2x2 forms, written branch-free (selects only) so that LLVM
  vectorises the lock-step loop over pairs. They take per-sequence precomputed factors
  (square roots / inverse square roots of the self-kernels) whose products replace
  ``sqrt(a * b)``.

The pip build of llvmlite has no SVML, so ``math.acos`` does not vectorise; ``_asin_core``
is fdlibm's rational approximation of asin on [0, 0.5] (max error below 1 ulp there),
and the range reduction asin(y) = pi/2 - 2 asin(sqrt((1-y)/2)) covers [0.5, 1] with a
few ulp of error.
"""

import math

from ._jit import jit_inline

PI = math.pi
HALF_PI = 0.5 * math.pi
INV_2PI = 1.0 / (2.0 * math.pi)
TWO_OVER_PI = 2.0 / math.pi
FOUR_OVER_PI = 4.0 / math.pi

_PS0 = 1.66666666666666657415e-01
_PS1 = -3.25565818622400915405e-01
_PS2 = 2.01212532134862925881e-01
_PS3 = -4.00555345006794114027e-02
_PS4 = 7.91534994289814532176e-04
_PS5 = 3.47933107596021167570e-05
_QS1 = -2.40339491173441421878e+00
_QS2 = 2.02094576023350569471e+00
_QS3 = -6.88283971605453293030e-01
_QS4 = 7.70381505559019352791e-02


@jit_inline
def _asin_core(u, z):
    """asin(u) for 0 <= u <= 0.5, given z = u * u (fdlibm's rational form)."""
    p = z * (_PS0 + z * (_PS1 + z * (_PS2 + z * (_PS3 + z * (_PS4 + z * _PS5)))))
    q = 1.0 + z * (_QS1 + z * (_QS2 + z * (_QS3 + z * _QS4)))
    return u + u * (p / q)


@jit_inline
def _clip_unit(x):
    """Clip to [-1, 1] (a guard against rounding, never a change of meaning). NaN stays
    NaN, so that an impossible input shows in the result instead of becoming rho = 1."""
    x = 1.0 if x > 1.0 else x
    return -1.0 if x < -1.0 else x


@jit_inline
def _reduced_asin(y, w):
    """For 0 <= y <= 1 and w = 1 - y: (t, big) with asin(y) = pi/2 - 2t if big else t
    (and so acos(y) = 2t if big else pi/2 - t), without cancellation near y = 1."""
    big = y > 0.5
    z = w * 0.5 if big else y * y
    s = math.sqrt(w * 0.5)
    u = s if big else y
    return _asin_core(u, z), big


@jit_inline
def relu_dual_cross(c, sqrt_ab, inv_sqrt_ab):
    """(V, V') of relu for Lam = [[a, c], [c, b]], given sqrt(a b) and 1 / sqrt(a b).

    ``inv_sqrt_ab == 0`` encodes a * b == 0 (project choice: rho := 0, so V = 0 and
    V' = 1/4). Branch-free.
    """
    rho = _clip_unit(c * inv_sqrt_ab)
    y = abs(rho)
    w = 1.0 - y
    r, big = _reduced_asin(y, w)
    acos_y = 2.0 * r if big else HALF_PI - r          # arccos(|rho|)
    pi_minus_theta = acos_y if rho < 0.0 else PI - acos_y
    sin_theta = math.sqrt(w * (1.0 + y))
    v = sqrt_ab * INV_2PI * (sin_theta + pi_minus_theta * rho)
    vp = pi_minus_theta * INV_2PI
    return v, vp


@jit_inline
def erf_dual_cross(c, q_ab, sqrt_ab):
    """(V, V') of erf for Lam = [[a, c], [c, b]], given q_ab = 1 / sqrt((1+2a)(1+2b))
    and sqrt(a b).

    c is first held to the Cauchy-Schwarz bound |c| <= sqrt(a b) (a guard against
    rounding, inactive for every valid block). It matters: where sw^2 V' > 1 (erf with
    a large sigma_w) the cross recursion amplifies rounding exponentially along the
    walk, and without the bound two equal series that are not the same sample would
    drift to |r| = 1, where V' is infinite.
    """
    c = c if c < sqrt_ab else sqrt_ab
    c = c if c > -sqrt_ab else -sqrt_ab
    r = _clip_unit(2.0 * c * q_ab)
    y = abs(r)
    w = 1.0 - y
    t, big = _reduced_asin(y, w)
    asin_y = HALF_PI - 2.0 * t if big else t
    asin_r = -asin_y if r < 0.0 else asin_y
    one_minus_r2 = w * (1.0 + y)
    one_minus_r2 = one_minus_r2 if one_minus_r2 > 1e-300 else 1e-300
    v = TWO_OVER_PI * asin_r
    vp = FOUR_OVER_PI * q_ab / math.sqrt(one_minus_r2)
    return v, vp


@jit_inline
def relu_dual_self(a):
    """(V, V') of relu on a same-sample block [[a, a], [a, a]]: rho == 1 exactly."""
    if a > 0.0:
        return 0.5 * a, 0.5
    return 0.0, 0.25


@jit_inline
def erf_dual_self(a):
    """(V, V') of erf on a same-sample block [[a, a], [a, a]]."""
    return (TWO_OVER_PI * math.asin(2.0 * a / (1.0 + 2.0 * a)),
            FOUR_OVER_PI / math.sqrt(1.0 + 4.0 * a))
