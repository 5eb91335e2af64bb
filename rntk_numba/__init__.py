"""rntk-numba: the Recurrent Neural Tangent Kernel for sequences of any length.

Public names only; nothing compiles at import.
"""

from ._version import __version__
from .gram import gram
from .params import RNTK
from .sequences import PackedSequences, from_channels_first, pack, to_padded
from .store import GramStore
from .datasets import load_demo, load_ucr, normalize
from .estimators import (KernelClassifier, KernelRegressor, RNTKClassifier,
                         RNTKRegressor, RNTKSearchCV, SeriesNormalizer)
from .metrics import summary_metrics

__all__ = ["__version__", "RNTK", "gram", "GramStore", "pack", "PackedSequences",
           "from_channels_first", "to_padded",
           "load_demo", "load_ucr", "normalize",
           "RNTKClassifier", "RNTKRegressor", "RNTKSearchCV", "KernelClassifier",
           "KernelRegressor", "SeriesNormalizer", "summary_metrics"]
