"""What the estimators accept: checks of X, y and sample weights, and the input
normaliser (:class:`SeriesNormalizer`, a pipeline step).

Every estimator takes sequence sets in any layout :func:`rntk_numba.pack` accepts: ragged
lists of ``(T_i,)`` / ``(T_i, m)`` arrays, ``(N, T)`` or ``(N, T, m)`` arrays (trailing
NaN rows are padding); the checks here turn them into ``PackedSequences`` with the
messages scikit-learn users expect. May import: ``sequences``, ``datasets`` (on first
use) and scikit-learn; nothing of the estimators or the search.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .sequences import PackedSequences, pack

__all__ = ["SeriesNormalizer"]


def _validate_X(X, name="X") -> PackedSequences:
    """Pack a sequence set, with the messages scikit-learn users expect."""
    if isinstance(X, PackedSequences):
        return X
    try:
        import scipy.sparse as sp
        if sp.issparse(X):
            raise TypeError(f"{name}: sparse input is not supported; pass dense "
                            f"series (a list of arrays or a 2-D / 3-D array)")
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
        X = np.asarray(X)                             # pandas DataFrame, array-likes
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise ValueError(f"{name}: Complex data not supported")
        if X.ndim == 1 and X.dtype != object:
            raise ValueError(
                f"{name}: expected a sequence set, got a 1-D array of shape {X.shape}. "
                f"Reshape your data: {name}[None, :] for one univariate series, or "
                f"pass a list of arrays for several series")
        if X.ndim >= 2 and X.shape[1] == 0:
            raise ValueError(f"{name}: 0 feature(s) (shape={X.shape}) while a minimum "
                             f"of 1 is required: every series needs a time step")
        if X.dtype == object and X.ndim >= 2:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name}: object array that is not numeric: "
                                f"argument must be a string or a real number ({exc})") \
                    from None
    return pack(X, name)


def _validate_sample_weight(sample_weight, n):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def _check_y(y, n, classification):
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if classification:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
    else:
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"y must be numeric for regression, got dtype "
                                 f"{y.dtype}") from None
        if y.ndim == 2 and y.shape[1] == 1:
            from sklearn.utils.validation import column_or_1d as _c1d
            y = _c1d(y, warn=True)
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or inf")
    if y.shape[0] != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n}, {y.shape[0]}]")
    return y


def _rntk_tags(tags):
    tags.input_tags.two_d_array = True
    tags.input_tags.three_d_array = True
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    tags.input_tags.pairwise = False
    tags.non_deterministic = False
    return tags


class SeriesNormalizer(TransformerMixin, BaseEstimator):
    """Normalise every series on its own (a stateless pipeline step).

    Parameters
    ----------
    method : {"l2", "znorm", "none"}, default "l2"
        See :func:`rntk_numba.datasets.normalize`. Output: a ragged list.
    """

    def __init__(self, method="l2"):
        self.method = method

    def fit(self, X, y=None):
        from .datasets import NORMALIZATIONS
        if self.method not in NORMALIZATIONS:
            raise ValueError(f"SeriesNormalizer: method must be one of "
                             f"{NORMALIZATIONS}, got {self.method!r}")
        self.n_channels_ = _validate_X(X).m
        return self

    def transform(self, X):
        """Normalised series, in the input's layout: a list for a list; for an array
        ``(N, T)`` / ``(N, T, m)``, an array of the same shape (NaN padding kept)."""
        from .datasets import normalize
        from .sequences import to_padded
        check_is_fitted(self, "n_channels_")
        if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
            X = np.asarray(X)
        was_array = isinstance(X, np.ndarray) and X.dtype != object
        shape = X.shape if was_array else None
        P = _validate_X(X)
        if P.m != self.n_channels_:
            raise ValueError(f"X has {P.m} channels per time step, but SeriesNormalizer "
                             f"was fitted on series with {self.n_channels_}")
        out = normalize(P, self.method)
        if not was_array:
            return out
        arr = to_padded(out, length=shape[1], fill=np.nan, side="end")
        return arr.reshape(shape)

    def __sklearn_tags__(self):
        tags = _rntk_tags(super().__sklearn_tags__())
        tags.requires_fit = True
        return tags
