"""The RNTK hyperparameters: one frozen, hashable, validated object (spec section 1)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers

__all__ = ["RNTK", "ACTIVATIONS", "READOUTS", "FORMULA_VERSION"]

#: Activations with a closed-form dual (spec section 2), and their integer codes in the
#: jitted core.
ACTIVATIONS = {"relu": 0, "erf": 1}

#: Read-outs and their codes in the jitted core: "last" is the spec's; "mean" is an
#: extension (see ``RNTK``).
READOUTS = {"last": 0, "mean": 1}

#: Bumped whenever the mathematics or the numerics of the engine change, so that cached
#: Gram matrices computed by an older formula are never served (see ``GramStore``).
FORMULA_VERSION = 1

_SIGMAS = ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v")


@dataclasses.dataclass(frozen=True)
class RNTK:
    """Hyperparameters of the infinitely wide Elman RNN whose kernels ``gram`` computes.

    Parameters
    ----------
    sigma_w : float, default sqrt(2)
        Scale of the recurrent weights W (``sw`` in the spec). ``sqrt(2)`` with relu and
        ``sigma_u=1`` gives a roughly flat sensitivity over time (spec section 4).
    sigma_u : float, default 1.0
        Scale of the input weights U.
    sigma_b : float, default 0.0
        Scale of the biases b.
    sigma_h : float, default 0.0
        Standard deviation of the random initial hidden state (enters only "same sample"
        pairs, spec 3.2).
    sigma_v : float, default 1.0
        Scale of the read-out; multiplies both kernels by ``sigma_v**2``.
    n_layers : int, default 1
        Number of stacked recurrent layers L >= 1.
    activation : {"relu", "erf"}, default "relu"
    readout : {"last", "mean"}, default "last"
        ``"last"``: the spec's network, whose read-out sees the last hidden state.
        ``"mean"`` (an extension, outside the spec): the kernels of the end-aligned
        prefix pairs along the walk, summed and divided by sqrt(T T'),
        ``K_mean(x, x') = (T T')**-0.5 * sum_{k < min(T, T')} K(x[:T-k], x'[:T'-k])``
        (the same for Theta): for equal lengths the average over t of the kernel
        between the first t steps of both series. It is the infinite-width kernel of
        the same RNN read out at every step by its own head, indexed by the distance
        k from the last step: ``f(x) = T**-0.5 * sum_k sv/sqrt(n) v_k . h[L, T-k](x)``
        with independent ``v_k`` (the cross terms of different heads vanish in the
        limit). It is not the kernel of one head on the mean of the hidden states,
        which would couple different time steps. Positive semi-definite; about 8-15 %
        costlier than "last" (the sum along the walk). On the UCR benchmark it is much
        stronger than "last" (see BENCHMARKS.md).

    Examples
    --------
    >>> k = RNTK(sigma_b=0.1)
    >>> k.replace(n_layers=2).n_layers
    2
    >>> RNTK.from_dict(k.to_dict()) == k
    True
    """

    sigma_w: float = math.sqrt(2.0)
    sigma_u: float = 1.0
    sigma_b: float = 0.0
    sigma_h: float = 0.0
    sigma_v: float = 1.0
    n_layers: int = 1
    activation: str = "relu"
    readout: str = "last"

    def __post_init__(self):
        for name in _SIGMAS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"RNTK: {name} must be a real number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < 0 or value > 1e150:
                raise ValueError(
                    f"RNTK: {name} must be finite, >= 0 and <= 1e150 (its square "
                    f"enters the recursion), got {value!r}"
                )
            object.__setattr__(self, name, value)
        n = self.n_layers
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"RNTK: n_layers must be an integer >= 1, got {n!r}")
        if n < 1:
            raise ValueError(f"RNTK: n_layers must be >= 1, got {n!r}")
        object.__setattr__(self, "n_layers", int(n))
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"RNTK: activation must be one of {sorted(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        if self.readout not in READOUTS:
            raise ValueError(
                f"RNTK: readout must be one of {sorted(READOUTS)}, got {self.readout!r}"
            )

    # -- conveniences -------------------------------------------------------------
    def replace(self, **changes) -> "RNTK":
        """A copy with some hyperparameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (JSON / HDF5-attribute friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RNTK":
        return cls(**d)

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS[self.activation]

    @property
    def readout_code(self) -> int:
        return READOUTS[self.readout]

    @property
    def canonical(self) -> str:
        """Stable, exact string form (floats in hex), the basis of cache keys (the
        spec's read-out is implied, so keys from before ``readout`` existed hold)."""
        parts = [f"{name}={getattr(self, name).hex()}" for name in _SIGMAS]
        parts.append(f"n_layers={self.n_layers}")
        parts.append(f"activation={self.activation}")
        if self.readout != "last":
            parts.append(f"readout={self.readout}")
        return "RNTK(" + ",".join(parts) + ")"

    def key(self, kind: str = "ntk") -> str:
        """Hex digest identifying (hyperparameters, kind, formula version)."""
        text = f"{self.canonical};kind={kind};formula={FORMULA_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def __str__(self) -> str:
        return (
            f"RNTK(sigma_w={self.sigma_w:g}, sigma_u={self.sigma_u:g}, "
            f"sigma_b={self.sigma_b:g}, sigma_h={self.sigma_h:g}, "
            f"sigma_v={self.sigma_v:g}, n_layers={self.n_layers}, "
            f"activation={self.activation!r}"
            + ("" if self.readout == "last" else f", readout={self.readout!r}") + ")"
        )
