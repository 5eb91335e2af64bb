"""The one numba policy of rntk-numba.

Every jitted function is compiled with the same flags: nopython (njit), ``nogil`` (the tile
scheduler runs serial kernels in joblib threads), ``cache=True`` (tests, scripts and
worker processes load compiled code instead of recompiling), the NumPy error model
(no ZeroDivisionError branches, which would block vectorisation) and NO fastmath:
without ``contract``/``reassoc`` flags the vectorised and the scalar remainder of a loop
round identically, which keeps results bit-identical whatever the tiling.
Tunables are passed as arguments, never read from globals inside jitted code.
"""

import numba

JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy",
                   fastmath=False)


def jit(fn):
    """Decorator: compile ``fn`` with the project's numba policy."""
    return numba.njit(**JIT_OPTIONS)(fn)


def jit_inline(fn):
    """Decorator for small scalar helpers called from vectorised loops: inlined at the
    numba IR level (calls between separately compiled functions are opaque to LLVM and
    would block vectorisation)."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)
