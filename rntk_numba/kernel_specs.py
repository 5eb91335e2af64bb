"""Kernel settings as values: the RNTK and the baselines it is compared with.

A *kernel spec* is a small frozen object naming one kernel setting (a family and its
hyperparameters) with one method, ``spec.gram(X, Y=None, ...)``, that returns the
symmetric Gram ``K(X, X)`` (``Y`` omitted) or the cross kernel ``K(X, Y)``. The
estimators and the cross-validated search of :mod:`rntk_numba.estimators` work with any
spec, so the RNTK and every baseline go through the same machinery:

* :class:`RNTKSpec` -- the RNTK (or its NNGP kernel) on the raw, ragged sequences;
  Gram matrices go through the on-disk store when ``cache`` is given.
* :class:`NTKSpec` -- the closed-form NTK of an infinitely wide L-layer MLP
  (:func:`rntk_numba.baselines.mlp_ntk`) on the flattened series;
* :class:`RBFSpec` -- ``exp(-gamma ||x - y||^2)``;
* :class:`PolySpec` -- ``(gamma <x, y> + coef0) ** degree``.

The fixed-length baselines see a series set as vectors: each series is zero-padded
*at its start* to ``length`` time steps (so that sequences are aligned at their ends,
as in the RNTK, spec 3.1) and flattened to ``length * m`` values. Equal-length sets are
just flattened. ``length=None`` means "the longest series of X (and Y)"; an estimator
fixes it at fit time (see :meth:`KernelSpec.fixed_for`), so that training and test
vectors have the same dimension.

:func:`grid` builds the cartesian product of hyperparameter lists for a family.

(This module was ``rntk_numba.search_kernels``; that name still imports it.) May
import: ``params``, ``sequences``; ``gram``, ``engine`` and ``baselines`` on first use.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from .params import RNTK
from .sequences import PackedSequences, pack, to_padded

__all__ = ["KernelSpec", "RNTKSpec", "NTKSpec", "RBFSpec", "PolySpec", "grid",
           "flatten_padded", "FAMILIES"]


def flatten_padded(X, length: int | None = None) -> np.ndarray:
    """A series set as fixed-length vectors: zero-padded at the start, flattened.

    Parameters
    ----------
    X : sequence set (any layout ``pack`` accepts)
    length : int, optional
        Time steps after padding (default: the longest series). A longer series raises.

    Returns
    -------
    ndarray (N, length * m) float64
    """
    P = pack(X)
    T = int(P.lengths.max())
    if length is not None and T > length:
        i = int(np.argmax(P.lengths))
        raise ValueError(f"series {i} has {T} time steps, more than the padded length "
                         f"{length} this kernel was fixed to (set length= on the "
                         f"kernel spec to cover the longest series)")
    L = T if length is None else int(length)
    if np.all(P.lengths == L):
        return P.values.reshape(P.n, L * P.m)
    return to_padded(P, length=L, fill=0.0, side="start").reshape(P.n, L * P.m)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Base class of kernel settings. Subclasses set ``family`` and implement
    ``_matrix(A, B)`` on packed inputs (B None: the symmetric Gram)."""

    family = "kernel"
    #: Whether the kernel needs fixed-length vectors (zero padding for ragged sets).
    fixed_length = True

    def params(self) -> dict:
        """The kernel's hyperparameters (for tables and ``set_params``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> "KernelSpec":
        return dataclasses.replace(self, **changes)

    #: Fields left out of ``label()`` while they hold their default value.
    _quiet = ("sigma_v", "activation", "kind", "length")

    def label(self) -> str:
        """Short human-readable form, e.g. ``RBF(gamma=1)`` (the padded length and
        secondary parameters at their defaults are left out)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items()
                          if k != "length" and not (k in self._quiet
                                                    and v == defaults.get(k)))
        return f"{self.family}({inner})"

    def fixed_for(self, X) -> "KernelSpec":
        """This spec with everything that depends on the training set fixed (the padded
        length of fixed-length kernels). Called by estimators at fit time."""
        if self.fixed_length and getattr(self, "length", None) is None:
            return self.replace(length=int(pack(X).lengths.max()))
        return self

    def gram(self, X, Y=None, *, n_jobs=None, cache=None, progress=False) -> np.ndarray:
        """``K(X, X)`` (Y omitted) or ``K(X, Y)``, float64 (N, M)."""
        PX = pack(X, "X")
        PY = None if Y is None else pack(Y, "Y")
        if PY is not None and PY.m != PX.m:
            raise ValueError(f"X has {PX.m} channels per time step, Y has {PY.m}")
        return self._matrix(PX, PY, n_jobs=n_jobs, cache=cache, progress=progress)

    def diag(self, X) -> np.ndarray:
        """Self-kernels ``K(x, x)`` of every series, each as the same sample (the
        diagonal of ``gram(X)``, without computing the rest), float64 (N,)."""
        PX = pack(X, "X")
        return np.asarray(self._self_values(PX), dtype=np.float64)

    def _self_values(self, PX):
        A, _ = self._vectors(PX, None)
        return np.array([self._matrix(pack(A[i:i + 1]), None)[0, 0]
                         for i in range(A.shape[0])])

    # -- fixed-length helpers ------------------------------------------------------
    def _vectors(self, PX: PackedSequences, PY):
        length = getattr(self, "length", None)
        if length is None:
            length = int(PX.lengths.max()) if PY is None else \
                int(max(PX.lengths.max(), PY.lengths.max()))
        A = flatten_padded(PX, length)
        B = None if PY is None else flatten_padded(PY, length)
        return A, B

    def _matrix(self, PX, PY, **kw):  # pragma: no cover - abstract
        raise NotImplementedError


def _fmt(v):
    if isinstance(v, float):
        if abs(v - math.sqrt(2)) < 1e-12:
            return "sqrt2"
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


@dataclasses.dataclass(frozen=True)
class RNTKSpec(KernelSpec):
    """The RNTK (``kind="ntk"``) or its NNGP kernel (``kind="nngp"``) on raw sequences.

    Parameters
    ----------
    kernel : RNTK
        Hyperparameters.
    kind : {"ntk", "nngp"}
    tile_size : int, optional
        Passed to :func:`rntk_numba.gram` (results do not depend on it).
    """

    kernel: RNTK = dataclasses.field(default_factory=RNTK)
    kind: str = "ntk"
    tile_size: int | None = None

    family = "RNTK"
    fixed_length = False

    def __post_init__(self):
        if not isinstance(self.kernel, RNTK):
            raise TypeError(f"RNTKSpec: kernel must be an RNTK, got "
                            f"{type(self.kernel).__name__}")
        if self.kind not in ("ntk", "nngp"):
            raise ValueError(f"RNTKSpec: kind must be 'ntk' or 'nngp', got {self.kind!r}")

    def params(self) -> dict:
        out = self.kernel.to_dict()
        out["kind"] = self.kind
        return out

    def label(self) -> str:
        k = self.kernel
        parts = [f"sigma_w={_fmt(k.sigma_w)}", f"sigma_b={_fmt(k.sigma_b)}",
                 f"sigma_h={_fmt(k.sigma_h)}"]
        if k.sigma_u != 1.0:
            parts.append(f"sigma_u={_fmt(k.sigma_u)}")
        if k.sigma_v != 1.0:
            parts.append(f"sigma_v={_fmt(k.sigma_v)}")
        if k.n_layers != 1:
            parts.append(f"L={k.n_layers}")
        if k.activation != "relu":
            parts.append(k.activation)
        if k.readout != "last":
            parts.append(f"readout={k.readout}")
        if self.kind != "ntk":
            parts.append(self.kind)
        return "RNTK(" + ", ".join(parts) + ")"

    def _self_values(self, PX):
        from .engine import prepare
        problem = prepare(PX, None, self.kernel)
        return problem.diag_ntk if self.kind == "ntk" else problem.diag_nngp

    def _matrix(self, PX, PY, *, n_jobs=None, cache=None, progress=False):
        from .gram import gram
        return gram(PX, PY, kernel=self.kernel, kind=self.kind, n_jobs=n_jobs,
                    progress=progress, cache=cache, tile_size=self.tile_size)


@dataclasses.dataclass(frozen=True)
class NTKSpec(KernelSpec):
    """Closed-form NTK / NNGP of an infinitely wide fully connected network with
    ``n_layers`` hidden layers, on zero-padded, flattened series
    (:func:`rntk_numba.baselines.mlp_ntk`)."""

    n_layers: int = 1
    sigma_w: float = math.sqrt(2.0)
    sigma_b: float = 0.0
    sigma_v: float = 1.0
    activation: str = "relu"
    kind: str = "ntk"
    length: int | None = None

    family = "NTK"

    def __post_init__(self):
        if isinstance(self.n_layers, bool) or int(self.n_layers) != self.n_layers \
                or self.n_layers < 1:
            raise ValueError(f"NTKSpec: n_layers must be an integer >= 1, "
                             f"got {self.n_layers!r}")
        for name in ("sigma_w", "sigma_b", "sigma_v"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"NTKSpec: {name} must be finite and >= 0, got {v!r}")
        if self.kind not in ("ntk", "nngp"):
            raise ValueError(f"NTKSpec: kind must be 'ntk' or 'nngp', got {self.kind!r}")
        _check_length(self)

    def _self_values(self, PX):
        from .baselines import mlp_ntk
        A, _ = self._vectors(PX, None)
        kw = dict(n_layers=int(self.n_layers), sigma_w=float(self.sigma_w),
                  sigma_b=float(self.sigma_b), sigma_v=float(self.sigma_v),
                  activation=self.activation, kind=self.kind)
        return np.array([mlp_ntk(A[i:i + 1], **kw)[0, 0] for i in range(A.shape[0])])

    def _matrix(self, PX, PY, **_):
        from .baselines import mlp_ntk
        A, B = self._vectors(PX, PY)
        return mlp_ntk(A, B, n_layers=int(self.n_layers), sigma_w=float(self.sigma_w),
                       sigma_b=float(self.sigma_b), sigma_v=float(self.sigma_v),
                       activation=self.activation, kind=self.kind)


@dataclasses.dataclass(frozen=True)
class RBFSpec(KernelSpec):
    """Gaussian kernel ``exp(-gamma ||x - y||^2)`` on zero-padded, flattened series."""

    gamma: float = 1.0
    length: int | None = None

    family = "RBF"

    def __post_init__(self):
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma)
                and self.gamma > 0):
            raise ValueError(f"RBFSpec: gamma must be finite and > 0, got {self.gamma!r}")
        _check_length(self)

    def _self_values(self, PX):
        return np.ones(PX.n)

    def _matrix(self, PX, PY, **_):
        from sklearn.metrics.pairwise import rbf_kernel
        A, B = self._vectors(PX, PY)
        K = rbf_kernel(A, B, gamma=float(self.gamma))
        if B is None:
            np.fill_diagonal(K, 1.0)    # exact, whatever the rounding of ||x - x||^2
        return K


@dataclasses.dataclass(frozen=True)
class PolySpec(KernelSpec):
    """Polynomial kernel ``(gamma <x, y> + coef0) ** degree`` on zero-padded,
    flattened series."""

    degree: int = 3
    coef0: float = 1.0
    gamma: float = 1.0
    length: int | None = None

    family = "POLY"

    def __post_init__(self):
        if isinstance(self.degree, bool) or int(self.degree) != self.degree \
                or self.degree < 1:
            raise ValueError(f"PolySpec: degree must be an integer >= 1, "
                             f"got {self.degree!r}")
        for name in ("coef0", "gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"PolySpec: {name} must be a finite number, got {v!r}")
        _check_length(self)

    def _self_values(self, PX):
        A, _ = self._vectors(PX, None)
        return (float(self.gamma) * np.einsum("ij,ij->i", A, A)
                + float(self.coef0)) ** int(self.degree)

    def _matrix(self, PX, PY, **_):
        from sklearn.metrics.pairwise import polynomial_kernel
        A, B = self._vectors(PX, PY)
        return polynomial_kernel(A, B, degree=int(self.degree), gamma=float(self.gamma),
                                 coef0=float(self.coef0))


def _check_length(spec):
    L = spec.length
    if L is not None and (isinstance(L, bool) or int(L) != L or L < 1):
        raise ValueError(f"{type(spec).__name__}: length must be None or an integer "
                         f">= 1, got {L!r}")


#: family name -> spec class
FAMILIES = {"RNTK": RNTKSpec, "NTK": NTKSpec, "RBF": RBFSpec, "POLY": PolySpec}

_RNTK_FIELDS = {f.name for f in dataclasses.fields(RNTK)}


def grid(family: str, **values) -> list:
    """All kernel specs of one family over the cartesian product of value lists.

    The order is that of ``itertools.product`` over the keyword arguments in the order
    given (the last varies fastest); searches break ties in favour of earlier entries.

    Parameters
    ----------
    family : {"RNTK", "NTK", "RBF", "POLY"}
    **values : lists of values for the family's parameters. For "RNTK": the ``RNTK``
        fields (sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation,
        readout) and ``kind``. A scalar is a one-element list.

    Examples
    --------
    >>> [s.label() for s in grid("RBF", gamma=[0.5, 2.0])]
    ['RBF(gamma=0.5)', 'RBF(gamma=2)']
    >>> len(grid("RNTK", sigma_w=[1.3, 1.4], sigma_b=[0.0, 0.1, 0.2]))
    6
    """
    if family not in FAMILIES:
        raise ValueError(f"grid: family must be one of {sorted(FAMILIES)}, "
                         f"got {family!r}")
    names = list(values)
    lists = []
    for name in names:
        v = values[name]
        v = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        if not v:
            raise ValueError(f"grid: the list of values for {name!r} is empty")
        lists.append(v)
    cls = FAMILIES[family]
    allowed = (_RNTK_FIELDS | {"kind", "tile_size"}) if family == "RNTK" else \
        {f.name for f in dataclasses.fields(cls)}
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"grid: unknown {family} parameter(s) {unknown}; "
                         f"allowed: {sorted(allowed)}")
    out = []
    for combo in itertools.product(*lists):
        kw = dict(zip(names, combo))
        if family == "RNTK":
            extra = {k: kw.pop(k) for k in ("kind", "tile_size") if k in kw}
            out.append(RNTKSpec(RNTK(**kw), **extra))
        else:
            out.append(cls(**kw))
    return out
