"""A ridge classifier that learns from features streamed in row batches.

Made for Nyström features at scale (:class:`rntk_numba.RNTKNystroem`): a million
series at m = 1024 is a 4 GB float32 feature matrix on disk, which scikit-learn's
``RidgeClassifier`` would copy (centring) and hold in float64. Ridge regression needs
only the sufficient statistics ``A = Phi^T Phi`` (m x m), ``b = Phi^T Y``, the column
sums and ``Y^T Y``, accumulated batch by batch in float64; the solution for every
penalty follows from one eigendecomposition of the centred ``A``. The penalty is
chosen by the exact leave-one-out error (a second pass: the leverage of every row in
the eigenbasis, as scikit-learn's ``RidgeClassifierCV``), or, where a second pass is
not possible (``partial_fit``), by generalised cross-validation from the statistics
alone (Golub, Heath and Wahba 1979):

    GCV(alpha) = RSS(alpha) / n / (1 - df(alpha) / n)^2,
    df(alpha) = sum_i lambda_i / (lambda_i + alpha).

Memory: O(m^2 + batch x m); time: two passes of ``n m^2`` multiply-adds.

Classes are coded one-vs-all as +1 / -1, as scikit-learn's ``RidgeClassifier`` does;
the prediction is the class of the largest decision value.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from ._progress import progress_bar
from .inputs import _validate_sample_weight

__all__ = ["StreamingRidgeClassifier"]

#: Default penalties searched by GCV (relative to the mean eigenvalue of the centred
#: feature Gram when ``alpha_scale="relative"``).
DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-6, 3))


def _as_2d(X):
    """X as a 2-D array-like read in batches: an HDF5 dataset stays as it is, anything
    else goes through scikit-learn's ``check_array`` (no copy of a float memmap; the
    finiteness check is done batch by batch). Returns (X, n_rows, n_cols)."""
    if not isinstance(X, np.ndarray) and type(X).__module__.startswith("h5py"):
        shape = X.shape
        if len(shape) != 2:
            raise ValueError(f"X must be 2-D (rows of features), got shape {shape}")
    else:
        X = check_array(X, dtype=(np.float64, np.float32), ensure_all_finite=False)
    return X, int(X.shape[0]), int(X.shape[1])


def _check_weights(sample_weight, n):
    """The estimators' weight check, and at least one row with a positive weight."""
    w = _validate_sample_weight(sample_weight, n)
    if w is not None and not w.sum() > 0:
        raise ValueError("sample_weight is zero everywhere: no row to learn from")
    return w


def _check_labels(y, n):
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    if y.shape[0] != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n}, {y.shape[0]}]")
    return y


class StreamingRidgeClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-all ridge classification from sufficient statistics, in row batches.

    Parameters
    ----------
    alphas : float or sequence of floats, default 1e-6 ... 1e2
        Penalties; with several, the one of least leave-one-out error is chosen.
    alpha_scale : {"relative", "absolute"}, default "relative"
        "relative": a penalty is multiplied by the mean eigenvalue of the centred
        feature Gram ``trace(A) / m``, so one grid suits features of any scale.
    alpha_selection : {"loo", "gcv"}, default "loo"
        How ``fit`` scores the penalties: "loo", the exact leave-one-out squared error
        (a second pass over X, as scikit-learn's ``RidgeClassifierCV``); "gcv",
        generalised cross-validation from the statistics alone (no second pass; it
        assumes similar leverages, which Nyström features of a training set that
        contains its landmarks do not have: measured worse there). ``partial_fit``
        always uses GCV (it sees each batch once).
    fit_intercept : bool, default True
    batch_size : int, default 16384
        Rows read at a time by ``fit`` (memory: a few ``batch_size x m`` float64
        blocks: 0.5 GB at m = 1024 during the leave-one-out pass).
    progress : bool, default False
        A progress bar over the rows read (``fit``: one pass, two with "loo";
        ``decision_function`` / ``predict``: one): minutes at a million rows.

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray (n_classes or 1, m)
    intercept_ : ndarray (n_classes or 1,)
    alpha_ : float
        The chosen penalty (absolute).
    alphas_ : ndarray
        The penalties tried (absolute).
    cv_scores_ : ndarray
        Leave-one-out (or GCV) mean squared error of each.
    n_samples_seen_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5)); y = (X[:, 0] > 0).astype(int)
    >>> clf = StreamingRidgeClassifier().fit(X, y)
    >>> float(clf.score(X, y)) > 0.9
    True
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, alpha_scale="relative",
                 alpha_selection="loo", fit_intercept=True, batch_size=16384,
                 progress=False):
        self.alphas = alphas
        self.alpha_scale = alpha_scale
        self.alpha_selection = alpha_selection
        self.fit_intercept = fit_intercept
        self.batch_size = batch_size
        self.progress = progress

    # ------------------------------------------------------------------ checks
    def _alphas(self):
        a = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or (a <= 0).any():
            raise ValueError(f"alphas must be positive finite numbers, got {self.alphas!r}")
        if self.alpha_scale not in ("relative", "absolute"):
            raise ValueError(f"alpha_scale must be 'relative' or 'absolute', got "
                             f"{self.alpha_scale!r}")
        return a

    def _selection(self):
        if self.alpha_selection not in ("loo", "gcv"):
            raise ValueError(f"alpha_selection must be 'loo' or 'gcv', got "
                             f"{self.alpha_selection!r}")
        return self.alpha_selection

    def _batch(self):
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {b!r}")
        return int(b)

    # ------------------------------------------------------------------ statistics
    def _reset(self, m, classes):
        self.classes_ = np.asarray(classes)
        if self.classes_.size < 2:
            raise ValueError(f"need samples of at least 2 classes, got "
                             f"{self.classes_.size} class")
        k = self.classes_.size
        self._A = np.zeros((m, m))
        self._B = np.zeros((m, k))
        self._s = np.zeros(m)
        self._ysum = np.zeros(k)
        self._yy = np.zeros(k)
        self._w = 0.0                       # total weight (the count without weights)
        self.n_samples_seen_ = 0
        self.n_features_in_ = m

    def _targets(self, y):
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, self.classes_.size - 1)
        bad = self.classes_[idx] != y
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"y[{i}] = {y[i]} is not one of the classes "
                             f"{self.classes_.tolist()} given to the first partial_fit")
        Y = -np.ones((y.shape[0], self.classes_.size))
        Y[np.arange(y.shape[0]), idx] = 1.0
        return Y

    def _accumulate(self, Xb, yb, offset=0, wb=None):
        Xb = np.asarray(Xb, dtype=np.float64)
        if not np.isfinite(Xb).all():
            i, j = (int(v) for v in np.argwhere(~np.isfinite(Xb))[0])
            raise ValueError(f"X[{offset + i}, {j}] is NaN or inf ({Xb[i, j]}): "
                             f"features must be finite")
        Y = self._targets(np.asarray(yb))
        WX = Xb if wb is None else Xb * wb[:, None]
        WY = Y if wb is None else Y * wb[:, None]
        self._A += WX.T @ Xb
        self._B += WX.T @ Y
        self._s += WX.sum(axis=0)
        self._ysum += WY.sum(axis=0)
        self._yy += (WY * Y).sum(axis=0)
        self._w += Xb.shape[0] if wb is None else float(wb.sum())
        self.n_samples_seen_ += Xb.shape[0]

    def fit(self, X, y, sample_weight=None):
        """Fit on a 2-D array-like X (ndarray, ``np.memmap``, HDF5 dataset), read in
        batches of ``batch_size`` rows.

        Parameters
        ----------
        X : array-like (n, m)
        y : array-like (n,)
        sample_weight : array-like (n,), optional
            Non-negative weights (a weight of 0 leaves a row out without copying X:
            e.g. the landmark rows of Nyström features, see ``RNTKNystroem``).

        Returns
        -------
        self
        """
        X, n, m = _as_2d(X)
        y = _check_labels(y, n)
        w = _check_weights(sample_weight, n)
        self._reset(m, np.unique(y))
        step = self._batch()
        loo = self._alphas().size > 1 and self._selection() == "loo"
        with progress_bar(self.progress, n * (2 if loo else 1), "ridge fit",
                          unit="row") as bar:
            for a in range(0, n, step):
                b = min(n, a + step)
                self._accumulate(X[a:b], y[a:b], a, None if w is None else w[a:b])
                if bar is not None:
                    bar.update(b - a)
            e = self._eig()
            if not loo:
                return self._finish(e, self._gcv(e) if e["alphas"].size > 1
                                    else np.zeros(1))
            return self._finish(e, self._loo(e, X, y, step, w, bar))

    def partial_fit(self, X, y, classes=None):
        """Add a batch. ``classes`` (all labels) is required on the first call."""
        X, n, m = _as_2d(X)
        y = _check_labels(y, n)
        if not hasattr(self, "_A"):
            if classes is None:
                raise ValueError("classes must be given on the first call to "
                                 "partial_fit")
            self._reset(m, np.unique(classes))
        elif m != self.n_features_in_:
            raise ValueError(f"X has {m} features, but StreamingRidgeClassifier is "
                             f"expecting {self.n_features_in_} features as input")
        self._accumulate(X, y)
        e = self._eig()
        return self._finish(e, self._gcv(e))

    def _eig(self):
        """Centred statistics and the eigendecomposition of the centred ``A``."""
        n = self._w
        if not n > 0:
            raise ValueError("no samples seen (or all weights are 0)")
        A, B = self._A, self._B
        yy = self._yy.copy()
        mu = np.zeros(A.shape[0])
        ybar = np.zeros(B.shape[1])
        if self.fit_intercept:
            mu = self._s / n
            ybar = self._ysum / n
            A = A - n * np.outer(mu, mu)
            B = B - n * np.outer(mu, ybar)
            yy = yy - n * ybar ** 2
        lam, V = np.linalg.eigh(0.5 * (A + A.T))
        lam = np.clip(lam, 0.0, None)
        alphas = self._alphas()
        scale = max(float(lam.sum()) / lam.size, np.finfo(float).tiny) \
            if self.alpha_scale == "relative" else 1.0
        return dict(n=n, mu=mu, ybar=ybar, yy=yy, lam=lam, V=V, Vb=V.T @ B,
                    alphas=alphas * scale)

    def _gcv(self, e):
        """GCV score of each penalty, from the statistics alone."""
        n, lam, Vb, yy = e["n"], e["lam"], e["Vb"], e["yy"]
        out = np.empty(e["alphas"].size)
        for i, a in enumerate(e["alphas"]):
            c = Vb / (lam + a)[:, None]            # coefficients in the eigenbasis
            # RSS = yy - 2 w.b + w.A w, per class, summed
            rss = float(np.sum(yy - 2 * np.sum(c * Vb, axis=0)
                               + np.sum(c * c * lam[:, None], axis=0)))
            df = float(np.sum(lam / (lam + a))) + (1.0 if self.fit_intercept else 0.0)
            out[i] = max(rss, 0.0) / n / max(1.0 - df / n, 1e-12) ** 2
        return out

    def _loo(self, e, X, y, step, w=None, bar=None):
        """Exact leave-one-out mean squared error of each penalty (one more pass over
        X): residual_i / (1 - h_ii), with the leverages ``h_ii = 1/n + sum_j
        z_ij^2 / (lambda_j + alpha)``, ``z_i = V^T (x_i - mean)`` (the intercept is
        not penalised), as scikit-learn's ``RidgeClassifierCV`` computes it."""
        n, lam, V, Vb, mu, ybar = e["n"], e["lam"], e["V"], e["Vb"], e["mu"], e["ybar"]
        alphas = e["alphas"]
        h0 = 1.0 / n if self.fit_intercept else 0.0
        coefs = [Vb / (lam + a)[:, None] for a in alphas]
        sse = np.zeros(alphas.size)
        rows = y.shape[0]
        for a0 in range(0, rows, step):
            b = min(rows, a0 + step)
            Z = (np.asarray(X[a0:b], dtype=np.float64) - mu) @ V
            Y = self._targets(y[a0:b]) - ybar
            wb = np.ones(b - a0) if w is None else w[a0:b]
            Z2 = Z * Z
            for i, a in enumerate(alphas):
                h = wb * (h0 + Z2 @ (1.0 / (lam + a)))
                r = (Y - Z @ coefs[i]) / np.maximum(1.0 - h, 1e-12)[:, None]
                sse[i] += float(np.sum(wb[:, None] * r * r))
            if bar is not None:
                bar.update(b - a0)
        return sse / n

    def _finish(self, e, scores):
        best = int(np.argmin(scores))
        alpha = float(e["alphas"][best])
        W = e["V"] @ (e["Vb"] / (e["lam"] + alpha)[:, None])      # (m, k)
        b0 = e["ybar"] - e["mu"] @ W
        if self.classes_.size == 2:                # binary: one decision function
            W = W[:, 1:]
            b0 = b0[1:]
        self.coef_ = W.T.copy()
        self.intercept_ = np.asarray(b0, dtype=np.float64)
        self.alpha_ = alpha
        self.alphas_ = e["alphas"]
        self.cv_scores_ = scores
        return self

    # ------------------------------------------------------------------ predict
    def decision_function(self, X):
        """Decision values, ``(n,)`` for two classes, else ``(n, n_classes)``;
        computed in batches for array-likes on disk."""
        check_is_fitted(self, "coef_")
        X, n, m = _as_2d(X)
        if m != self.n_features_in_:
            raise ValueError(f"X has {m} features, but StreamingRidgeClassifier is "
                             f"expecting {self.n_features_in_} features as input")
        step = self._batch()
        out = np.empty((n, self.coef_.shape[0]))
        with progress_bar(self.progress, n, "ridge predict", unit="row") as bar:
            for a in range(0, n, step):
                b = min(n, a + step)
                Xb = np.asarray(X[a:b], dtype=np.float64)
                if not np.isfinite(Xb).all():
                    i, j = (int(v) for v in np.argwhere(~np.isfinite(Xb))[0])
                    raise ValueError(f"X[{a + i}, {j}] is NaN or inf ({Xb[i, j]}): "
                                     f"features must be finite")
                out[a:b] = Xb @ self.coef_.T + self.intercept_
                if bar is not None:
                    bar.update(b - a)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X):
        d = self.decision_function(X)
        if d.ndim == 1:
            return self.classes_[(d > 0).astype(np.int64)]
        return self.classes_[np.argmax(d, axis=1)]
