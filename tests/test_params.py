"""The hyperparameter object: validation, immutability, canonical form, keys."""

import math

import pytest

from rntk_numba import RNTK
from rntk_numba.params import FORMULA_VERSION


def test_defaults_and_conversion():
    k = RNTK()
    assert k.sigma_w == math.sqrt(2) and k.sigma_u == 1.0 and k.n_layers == 1
    assert k.activation == "relu"
    k2 = RNTK(sigma_w=1, sigma_b=0)            # ints become floats
    assert isinstance(k2.sigma_w, float) and k2 == RNTK(sigma_w=1.0, sigma_b=0.0)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"sigma_w": -1.0}, ValueError, "sigma_w"),
    ({"sigma_b": float("nan")}, ValueError, "sigma_b"),
    ({"sigma_h": float("inf")}, ValueError, "sigma_h"),
    ({"sigma_u": "1"}, TypeError, "sigma_u"),
    ({"sigma_v": True}, TypeError, "sigma_v"),
    ({"n_layers": 0}, ValueError, "n_layers"),
    ({"n_layers": 1.5}, TypeError, "n_layers"),
    ({"activation": "tanh"}, ValueError, "activation"),
])
def test_validation_names_the_parameter(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        RNTK(**kwargs)


def test_frozen_hashable_replace_roundtrip():
    k = RNTK(sigma_b=0.25, n_layers=2, activation="erf")
    with pytest.raises(Exception):
        k.sigma_b = 1.0
    assert len({k, RNTK(sigma_b=0.25, n_layers=2, activation="erf")}) == 1
    assert k.replace(sigma_b=0.5).sigma_b == 0.5 and k.sigma_b == 0.25
    assert RNTK.from_dict(k.to_dict()) == k
    with pytest.raises(ValueError):
        k.replace(n_layers=-1)


def test_canonical_form_and_keys_are_exact():
    a = RNTK(sigma_w=1.4)
    b = RNTK(sigma_w=1.4 + 1e-15)             # differs in the last bits only
    assert a.canonical != b.canonical and a.key() != b.key()
    assert a.canonical == RNTK(sigma_w=1.4).canonical             # stable
    assert a.key("ntk") != a.key("nngp")
    assert len(a.key()) == 32
    assert str(FORMULA_VERSION) and "RNTK(" in str(a)
    keys = {RNTK(**{name: 0.5}).key() for name in
            ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v")}
    assert len(keys) == 5
