"""aeon estimators: the RNTK classifier and regressor inside aeon's workflow.

``pip install 'rntk-numba[aeon]'``. :class:`RNTKClassifier` and :class:`RNTKRegressor`
subclass aeon's ``BaseClassifier`` / ``BaseRegressor`` and delegate to the
scikit-learn estimators of :mod:`rntk_numba.estimators` (a C-SVM / kernel ridge on the
precomputed RNTK). They take aeon's collection types -- ``numpy3D`` arrays
``(n_cases, n_channels, n_timepoints)``, 2-D ``(n_cases, n_timepoints)`` arrays and
lists of ``(n_channels, n_timepoints_i)`` arrays for unequal lengths -- and declare the
capabilities that are true of the RNTK: multivariate, unequal length (compared
directly, no padding) and multithreading (``n_jobs``, default 1 as aeon requires;
results do not depend on it). Missing values are not supported (aeon refuses them
before they reach the kernel).

``fit`` computes the training Gram once; ``predict`` computes only the cross kernel to
the training set and writes nothing on the estimator.

Examples
--------
>>> from aeon.datasets import load_gunpoint                       # doctest: +SKIP
>>> from rntk_numba.aeon import RNTKClassifier                    # doctest: +SKIP
>>> X, y = load_gunpoint(split="train")                           # doctest: +SKIP
>>> clf = RNTKClassifier(sigma_b=0.1, readout="mean", C=10).fit(X, y)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np
from aeon.classification.base import BaseClassifier
from aeon.regression.base import BaseRegressor
from aeon.utils.validation import check_n_jobs

from . import estimators as _est
from .sequences import from_channels_first

__all__ = ["RNTKClassifier", "RNTKRegressor"]

_TAGS = {
    "capability:multivariate": True,
    "capability:unequal_length": True,
    "capability:multithreading": True,
    # aeon converts every input to one of these; equal-length data stay 3-D
    "X_inner_type": ["np-list", "numpy3D"],
}

# RNTK hyperparameters shared by both estimators, in __init__ order
_RNTK_PARAMS = ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v", "n_layers",
                "activation", "readout", "kind")


def _to_series(X) -> list:
    """aeon's inner collection (numpy3D or list of (m, T_i)) -> list of (T_i, m)."""
    return from_channels_first(X)


class _Delegate:
    """fit / predict through a fitted ``rntk_numba.estimators`` estimator."""

    _inner_class = None          # set by subclasses
    _inner_params = ()           # the penalty parameters passed on

    def _make_inner(self):
        params = {name: getattr(self, name) for name in _RNTK_PARAMS + self._inner_params}
        return self._inner_class(**params, kernel_scaling=self.kernel_scaling,
                                 n_jobs=self._n_jobs, cache=self.cache)

    def _fit(self, X, y):
        self._n_jobs = check_n_jobs(self.n_jobs)
        self.estimator_ = self._make_inner().fit(_to_series(X), y)
        return self

    def _predict(self, X) -> np.ndarray:
        return self.estimator_.predict(_to_series(X))


class RNTKClassifier(_Delegate, BaseClassifier):
    """aeon classifier: a C-SVM on the precomputed Recurrent Neural Tangent Kernel.

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout
        The RNTK hyperparameters (see :class:`rntk_numba.RNTK`; ``readout="mean"`` is
        an extension outside the paper's definition, often much stronger for
        classification).
    kind : {"ntk", "nngp"}, default "ntk"
    C : float, default 1.0
        SVM cost on the scaled kernel.
    class_weight : dict or "balanced", optional
    kernel_scaling : {"trace", "cosine", "none"}, default "trace"
        See :class:`rntk_numba.RNTKClassifier`.
    n_jobs : int, default 1
        Workers for the Gram computations (aeon's convention: 1 by default, -1 all
        cores). Results are identical bit for bit for every value.
    cache : str, path or GramStore, optional
        Look Gram matrices up in / store them into the on-disk store.

    Attributes
    ----------
    estimator_ : rntk_numba.estimators.RNTKClassifier
        The fitted scikit-learn estimator this one delegates to.
    classes_, n_classes_
        As every aeon classifier.

    Notes
    -----
    ``predict_proba`` is aeon's default (one-hot of ``predict``): an SVM gives no
    calibrated probabilities.
    """

    _tags = dict(_TAGS)
    _inner_class = _est.RNTKClassifier
    _inner_params = ("C", "class_weight")

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", readout="last", kind="ntk",
                 C=1.0, class_weight=None, kernel_scaling="trace", n_jobs=1, cache=None):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.kind = kind
        self.C = C
        self.class_weight = class_weight
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache
        super().__init__()

    @classmethod
    def _get_test_params(cls, parameter_set="default"):
        """Small settings for aeon's estimator checks."""
        return [{"sigma_b": 0.1, "C": 10.0},
                {"readout": "mean", "kernel_scaling": "cosine", "n_layers": 2}]


class RNTKRegressor(_Delegate, BaseRegressor):
    """aeon regressor: kernel ridge regression on the precomputed RNTK.

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout, kind
        As :class:`RNTKClassifier`.
    alpha : float, default 1e-3
        Ridge penalty on the scaled kernel.
    kernel_scaling, n_jobs, cache
        As :class:`RNTKClassifier`.

    Attributes
    ----------
    estimator_ : rntk_numba.estimators.RNTKRegressor
    """

    _tags = dict(_TAGS)
    _inner_class = _est.RNTKRegressor
    _inner_params = ("alpha",)

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", readout="last", kind="ntk",
                 alpha=1e-3, kernel_scaling="trace", n_jobs=1, cache=None):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.kind = kind
        self.alpha = alpha
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache
        super().__init__()

    @classmethod
    def _get_test_params(cls, parameter_set="default"):
        """Small settings for aeon's estimator checks."""
        return [{"sigma_b": 0.1, "alpha": 1e-2},
                {"readout": "mean", "kernel_scaling": "cosine", "n_layers": 2}]
