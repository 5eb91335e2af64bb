"""The former name of :mod:`rntk_numba.kernel_specs` (kernel specifications for the
RNTK and the baselines), kept so that old imports work. New code imports
``rntk_numba.kernel_specs``; patch names there, not here."""

from .kernel_specs import (FAMILIES, _RNTK_FIELDS, KernelSpec, NTKSpec,  # noqa: F401
                           PolySpec, RBFSpec, RNTKSpec, _check_length, _fmt,
                           flatten_padded, grid)
from .kernel_specs import __all__  # noqa: F401
