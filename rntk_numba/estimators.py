"""scikit-learn estimators on precomputed kernels, and the cross-validated kernel search.

The door to three rooms; every name is importable from here, as it always was:

* :mod:`rntk_numba.kernel_models` -- :class:`RNTKClassifier` (a C-SVM,
  ``SVC(kernel="precomputed")``, on the RNTK), :class:`RNTKRegressor` (kernel ridge
  regression on the RNTK), :class:`KernelClassifier` / :class:`KernelRegressor` (the
  same on any kernel spec of :mod:`rntk_numba.kernel_specs`: RNTK, MLP NTK, RBF,
  polynomial), the kernel scalings (``"trace"``, ``"cosine"``, ``"none"``) and
  :data:`SVM_MAX_ITER`;
* :mod:`rntk_numba.search` -- :class:`RNTKSearchCV`, the paper's protocol: for every
  kernel setting of a grid the training Gram is computed ONCE (through the on-disk
  store when ``cache`` is given) and every fold and every C is evaluated by slicing it;
  the best setting is refit on the whole training set;
* :mod:`rntk_numba.inputs` -- what the estimators accept (checks of X, y and sample
  weights) and :class:`SeriesNormalizer`, per-series L2 / z-normalisation as a
  pipeline step.

Every estimator takes sequence sets in any layout :func:`rntk_numba.pack` accepts: ragged
lists of ``(T_i,)`` / ``(T_i, m)`` arrays, ``(N, T)`` or ``(N, T, m)`` arrays (trailing
NaN rows are padding). ``fit`` computes the training Gram once; ``predict`` computes
only the cross kernel ``K(X, X_train)``.

The names are the same objects as in their rooms; to patch one (``SVM_MAX_ITER`` in a
test, say), patch the room that reads it (``rntk_numba.kernel_models``).
"""

from .inputs import (SeriesNormalizer, _check_y, _rntk_tags,  # noqa: F401
                     _validate_sample_weight, _validate_X)
from .kernel_models import (KERNEL_SCALINGS, SVM_MAX_ITER, KernelClassifier,  # noqa: F401
                            KernelRegressor, RNTKClassifier, RNTKRegressor,
                            _check_scaling, _classifier_inner, _ClassifierMethods,
                            _cosine, _gram_scale, _inner_for, _KernelModel,
                            _regressor_inner, _require_finite, _RNTKParams, _root_self,
                            _SpecParams)
from .search import (DEFAULT_ALPHA, DEFAULT_C, DEFAULT_RNTK_GRID,  # noqa: F401
                     RNTKSearchCV, _as_grid_list)

__all__ = ["RNTKClassifier", "RNTKRegressor", "KernelClassifier", "KernelRegressor",
           "RNTKSearchCV", "SeriesNormalizer", "DEFAULT_RNTK_GRID", "DEFAULT_C",
           "DEFAULT_ALPHA", "KERNEL_SCALINGS"]
