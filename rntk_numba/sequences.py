"""Ragged sequence sets at the edge: every accepted input layout -> one packed form.

Layout convention (time first, channels last), the one used everywhere in rntk-numba:

* a list (or tuple) of arrays, each of shape ``(T_i,)`` (univariate) or ``(T_i, m)``;
* a 2-D array ``(N, T)`` of N univariate series;
* a 3-D array ``(N, T, m)``.

Rows that are NaN in every channel at the END of a series are padding (the UCR
archive's convention for shorter series) and are stripped. Anything else that is not a
finite number -- NaN inside a series, inf, an empty series, mixed channel counts,
non-numeric data -- raises ``ValueError`` / ``TypeError`` naming the series (and time
step). aeon / sktime store series channels first, ``(N, m, T)``; convert them with
:func:`from_channels_first`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers

import numpy as np

__all__ = ["PackedSequences", "pack", "from_channels_first", "to_padded", "lengths_of"]


@dataclasses.dataclass(frozen=True, eq=False)
class PackedSequences:
    """N sequences of m channels stored back to back.

    Attributes
    ----------
    values : ndarray, shape (sum T_i, m), float64, C-contiguous
    offsets : ndarray, shape (N + 1,), int64 -- series i is ``values[offsets[i]:offsets[i+1]]``
    lengths : ndarray, shape (N,), int64
    """

    values: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def m(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n

    def series(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def to_list(self) -> list:
        return [self.series(i) for i in range(self.n)]

    def subset(self, index) -> "PackedSequences":
        """The packed set of the series ``index`` (an integer array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return _from_valid_list([self.series(int(i)) for i in index], self.m)

    def fingerprint(self) -> str:
        """sha256 of (m, lengths, float64 bytes): equal data <=> equal fingerprint."""
        h = hashlib.sha256()
        h.update(b"rntk-packed-v1")
        h.update(np.int64(self.m).tobytes())
        h.update(np.ascontiguousarray(self.lengths, dtype="<i8").tobytes())
        # the array's own buffer (no bytes copy: 1.6 GB at a million series)
        values = np.ascontiguousarray(self.values, dtype="<f8")
        h.update(values.reshape(-1).view(np.uint8))
        return h.hexdigest()


def _check_numeric(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind in "biuf":
        return
    if arr.dtype.kind == "c":
        raise TypeError(f"{what}: complex values are not supported (dtype {arr.dtype})")
    raise TypeError(f"{what}: expected numeric data, got dtype {arr.dtype}")


def _strip_and_check(arr: np.ndarray, i: int, name: str) -> np.ndarray:
    """arr: (T, m) float64. Strip trailing all-NaN rows, then require finite values."""
    nan_rows = np.isnan(arr).all(axis=1)
    T = arr.shape[0]
    if T and nan_rows[-1]:
        keep = np.flatnonzero(~nan_rows)
        T = int(keep[-1]) + 1 if keep.size else 0
        arr = arr[:T]
    if T == 0:
        raise ValueError(f"{name}: series {i} is empty (length 0 after removing "
                         f"trailing NaN padding)")
    bad = ~np.isfinite(arr)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        v = arr[t, c]
        kind = "NaN inside the series (only trailing NaN rows are padding)" \
            if np.isnan(v) else f"non-finite value {v}"
        raise ValueError(f"{name}: series {i}, time step {t}, channel {c}: {kind}")
    return arr


def _from_valid_list(series: list, m: int) -> PackedSequences:
    lengths = np.array([s.shape[0] for s in series], dtype=np.int64)
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.empty((int(offsets[-1]), m), dtype=np.float64)
    for s, a, b in zip(series, offsets[:-1], offsets[1:]):
        values[a:b] = s
    return PackedSequences(values, offsets, lengths)


def _pack_array(arr: np.ndarray, name: str) -> PackedSequences:
    """Vectorised ``pack`` of an (N, T, m) float64 array (same rules and messages)."""
    N, T, m = arr.shape
    if T and np.isfinite(arr).all():          # the common case: no padding, no damage
        offsets = np.arange(0, N * T + 1, T, dtype=np.int64)
        values = arr.reshape(N * T, m).copy()     # never a view of the caller's array
        return PackedSequences(values, offsets, np.full(N, T, dtype=np.int64))
    nan_rows = np.isnan(arr).all(axis=2)                       # (N, T)
    # length = 1 + index of the last row that is not all-NaN (0 if none)
    not_pad = ~nan_rows
    last = T - 1 - np.argmax(not_pad[:, ::-1], axis=1)
    lengths = np.where(not_pad.any(axis=1), last + 1, 0).astype(np.int64)
    if (lengths == 0).any():
        i = int(np.flatnonzero(lengths == 0)[0])
        raise ValueError(f"{name}: series {i} is empty (length 0 after removing "
                         f"trailing NaN padding)")
    inside = np.arange(T)[None, :] < lengths[:, None]          # (N, T)
    bad = ~np.isfinite(arr) & inside[:, :, None]
    if bad.any():
        i, t, c = (int(v) for v in np.argwhere(bad)[0])
        v = arr[i, t, c]
        kind = "NaN inside the series (only trailing NaN rows are padding)" \
            if np.isnan(v) else f"non-finite value {v}"
        raise ValueError(f"{name}: series {i}, time step {t}, channel {c}: {kind}")
    values = np.ascontiguousarray(arr[inside])                 # series back to back
    offsets = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PackedSequences(values, offsets, lengths)


def pack(X, name: str = "X") -> PackedSequences:
    """Validate a sequence set in any accepted layout and pack it (float64).

    Parameters
    ----------
    X : list of arrays (T_i,) or (T_i, m); array (N, T); array (N, T, m); or a
        ``PackedSequences`` (returned as is).
    name : str
        Used in error messages ("X", "Y", ...).

    Raises
    ------
    TypeError
        Non-numeric or complex data, or a container that is not a sequence set.
    ValueError
        Empty set or series, NaN inside a series, inf, mixed channel counts, or a
        series of the wrong dimensionality. The message names the series index and,
        for bad values, the time step and channel.
    """
    if isinstance(X, PackedSequences):
        return X
    if isinstance(X, (str, bytes)) or X is None or isinstance(X, numbers.Number):
        raise TypeError(f"{name}: expected a sequence set (list of arrays, or a 2-D / "
                        f"3-D array), got {type(X).__name__}")
    if isinstance(X, np.ndarray) and X.dtype != object:
        _check_numeric(X, name)
        if X.ndim == 1:
            raise ValueError(
                f"{name}: a 1-D array is ambiguous; pass X[None, :] for one univariate "
                f"series, or a list of arrays for several series")
        if X.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a 2-D (N, T) or 3-D (N, T, m) array, "
                             f"got shape {X.shape}")
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        N, T, m = arr.shape
        if N == 0:
            raise ValueError(f"{name}: the sequence set is empty")
        if T == 0 or m == 0:
            raise ValueError(f"{name}: series have length {T} and {m} channels; "
                             f"both must be >= 1")
        return _pack_array(arr, name)
    try:
        items = list(X)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence set (list of arrays, or a 2-D / "
                        f"3-D array), got {type(X).__name__}") from None
    if not items:
        raise ValueError(f"{name}: the sequence set is empty")
    series, m = [], None
    for i, s in enumerate(items):
        what = f"{name}: series {i}"
        try:
            a = np.asarray(s)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what}: cannot be read as a numeric array ({exc})") from None
        _check_numeric(a, what)
        if a.ndim == 1:
            a = a[:, None]
        elif a.ndim != 2:
            raise ValueError(f"{what}: expected shape (T,) or (T, m), got {a.shape}")
        if a.shape[1] == 0:
            raise ValueError(f"{what}: has 0 channels")
        if m is None:
            m = a.shape[1]
        elif a.shape[1] != m:
            raise ValueError(f"{what}: has {a.shape[1]} channels, series 0 has {m} "
                             f"(all series of a set need the same channel count)")
        series.append(_strip_and_check(a.astype(np.float64, copy=False), i, name))
    return _from_valid_list(series, m)


def lengths_of(X) -> np.ndarray:
    """Lengths of the series of a (validated) sequence set."""
    return pack(X).lengths.copy()


def from_channels_first(X) -> list:
    """Convert aeon / sktime's channels-first layout to rntk-numba's list of (T_i, m).

    Parameters
    ----------
    X : array (N, m, T), or list of arrays (m, T_i) (aeon's unequal-length collections),
        or list of 1-D arrays (T_i,).

    Returns
    -------
    list of float64 arrays of shape (T_i, m), trailing all-NaN time steps removed.
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 3:
            raise ValueError(f"from_channels_first: expected (N, m, T), got {X.shape}")
        items = list(X)
    else:
        items = list(X)
    out = []
    for i, s in enumerate(items):
        a = np.asarray(s, dtype=np.float64)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ValueError(f"from_channels_first: series {i} has shape {a.shape}, "
                             f"expected (m, T_i)")
        out.append(np.ascontiguousarray(a.T))
    return pack(out).to_list()


def to_padded(X, length: int | None = None, fill: float = np.nan,
              side: str = "end") -> np.ndarray:
    """Pad a sequence set to a 3-D array (N, T_max, m).

    ``side="end"`` with NaN is the UCR layout (``pack`` reads it back exactly);
    ``side="start"`` with ``fill=0`` is the zero pre-padding that fixed-length kernels
    need (not equivalent for the RNTK in general, spec 3.3 item 4).
    """
    P = pack(X)
    T = int(P.lengths.max()) if length is None else int(length)
    if T < P.lengths.max():
        raise ValueError(f"to_padded: length {T} is shorter than the longest series "
                         f"({P.lengths.max()})")
    out = np.full((P.n, T, P.m), fill, dtype=np.float64)
    for i in range(P.n):
        s = P.series(i)
        if side == "end":
            out[i, :len(s)] = s
        elif side == "start":
            out[i, T - len(s):] = s
        else:
            raise ValueError("to_padded: side must be 'end' or 'start'")
    return out
