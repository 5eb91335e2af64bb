"""rntk-numba: the Recurrent Neural Tangent Kernel for sequences of any length.

Public names only; nothing compiles at import. The store (h5py) and the estimators
(scikit-learn) are imported on first use, so ``import rntk_numba`` stays light.
"""

import importlib

from ._version import __version__
from .gram import gram
from .params import RNTK
from .sequences import PackedSequences, from_channels_first, pack, to_padded

# public name -> module that defines it (imported lazily)
_LAZY = {
    "GramStore": "store",
    "RNTKGaussianProcessRegressor": "gp", "evidence_search": "gp",
    "load_demo": "datasets", "load_ucr": "datasets", "normalize": "datasets",
    "RNTKClassifier": "estimators", "RNTKRegressor": "estimators",
    "RNTKSearchCV": "estimators", "KernelClassifier": "estimators",
    "KernelRegressor": "estimators", "SeriesNormalizer": "estimators",
    "summary_metrics": "metrics", "RNTKNystroem": "nystroem",
}

__all__ = ["__version__", "RNTK", "gram", "pack", "PackedSequences",
           "from_channels_first", "to_padded", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rntk_numba' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
