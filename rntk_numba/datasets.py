"""Time-series classification data: the UCR archive layout, ``.ts`` files, aeon's
downloader, the bundled demo set, and per-series normalisation.

Every loader returns ragged sets in rntk-numba's layout (see :mod:`rntk_numba.sequences`):
a list of float64 arrays, ``(T_i,)`` for univariate series and ``(T_i, m)`` for
multivariate ones, so that series of different lengths are kept as they are (no
padding). Labels come back as a 1-D array (integers when every label is an integer,
strings otherwise).

The UCR 2018 archive stores each data set as ``<root>/<Name>/<Name>_TRAIN.tsv`` and
``<Name>_TEST.tsv``: one series per line, the class label first, then the values, tab
separated; shorter series of a variable-length set are padded with trailing NaN, which
the loader removes. The multivariate archive (and aeon / sktime) use the ``.ts`` format,
read by :func:`read_ts`.
"""

from __future__ import annotations

import io
import os
from importlib import resources

import numpy as np

from .sequences import pack

__all__ = ["load_ucr", "read_ucr_tsv", "read_ts", "load_classification", "load_demo",
           "list_ucr", "normalize", "NORMALIZATIONS"]

#: Accepted values of ``normalize(method=...)``.
NORMALIZATIONS = ("l2", "znorm", "none")


# --------------------------------------------------------------------------- labels
def _labels(raw) -> np.ndarray:
    """Labels as integers when they all are (``'1'``, ``'1.0'``, ``-1``), else strings."""
    arr = np.asarray(raw)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        return arr.astype(str)
    try:
        f = arr.astype(np.float64)
    except ValueError:
        return arr.astype(str)
    if np.all(np.isfinite(f)) and np.all(f == np.round(f)):
        return f.astype(np.int64)
    return arr.astype(str)


def _strip_trailing_nan(row: np.ndarray) -> np.ndarray:
    """A 1-D row without its trailing NaN padding (NaN inside a series is kept, so that
    ``pack`` later reports it with the series and time step)."""
    finite = np.flatnonzero(~np.isnan(row))
    end = int(finite[-1]) + 1 if finite.size else 0
    return np.ascontiguousarray(row[:end], dtype=np.float64)


# --------------------------------------------------------------------------- UCR .tsv
def read_ucr_tsv(path):
    """Read one UCR archive file (``<Name>_TRAIN.tsv`` / ``<Name>_TEST.tsv``).

    Parameters
    ----------
    path : str or path-like
        A tab-separated file, one series per line, the label in the first column.
        Shorter series padded with trailing NaN (the archive's variable-length
        convention) come back at their own length.

    Returns
    -------
    X : list of ndarray (T_i,), float64
    y : ndarray (N,), int64 or str

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is empty, not numeric, or a line has no values after its label
        (the message names the file and line).
    """
    path = os.fspath(path)
    with open(path, "r", encoding="utf-8") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"read_ucr_tsv: {path} contains no series")
    sep = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    X, y = [], []
    for i, line in enumerate(lines):
        fields = line.split(sep) if sep is not None else line.split()
        try:
            values = np.array([float(v) if v.strip() else np.nan for v in fields[1:]],
                              dtype=np.float64)
        except ValueError:
            raise ValueError(f"read_ucr_tsv: {path}, line {i + 1}: non-numeric value "
                             f"(expected the label then numbers separated by "
                             f"{'tabs' if sep == chr(9) else repr(sep)})") from None
        series = _strip_trailing_nan(values)
        if series.size == 0:
            raise ValueError(f"read_ucr_tsv: {path}, line {i + 1}: the series has no "
                             f"values (only a label, or only NaN)")
        y.append(fields[0].strip())
        X.append(series)
    return X, _labels(y)


def _find_split(root: str, name: str, split: str) -> str:
    folder = os.path.join(root, name)
    for ext in (".tsv", ".ts", ".txt"):
        for cand in (f"{name}_{split}{ext}", f"{name}_{split.lower()}{ext}"):
            path = os.path.join(folder, cand)
            if os.path.isfile(path):
                return path
    if not os.path.isdir(root):
        raise FileNotFoundError(f"load_ucr: data directory {root!r} does not exist")
    if not os.path.isdir(folder):
        known = list_ucr(root)
        hint = f" (it holds: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''})" \
            if known else " (it holds no <Name>/<Name>_TRAIN.tsv data sets)"
        raise FileNotFoundError(f"load_ucr: no data set {name!r} under {root!r}{hint}")
    raise FileNotFoundError(f"load_ucr: {folder!r} has no {name}_{split}.tsv or "
                            f"{name}_{split}.ts file")


def _read_any(path: str):
    if path.endswith(".ts"):
        return read_ts(path)
    return read_ucr_tsv(path)


def load_ucr(name: str, data_dir, *, normalize=None):
    """Load one data set stored in the UCR archive layout.

    Parameters
    ----------
    name : str
        The data set's name, e.g. ``"GunPoint"``.
    data_dir : str or path-like
        The archive's root: the files are ``<data_dir>/<name>/<name>_TRAIN.tsv`` and
        ``<name>_TEST.tsv`` (``.ts`` files of the same names are read too).
    normalize : {"l2", "znorm", None}, optional
        Per-series normalisation applied to both splits (see :func:`normalize`).

    Returns
    -------
    X_train : list of ndarray (T_i,) or (T_i, m)
    y_train : ndarray (N_train,)
    X_test : list of ndarray
    y_test : ndarray (N_test,)

    Examples
    --------
    >>> X, y, Xt, yt = load_ucr("GunPoint", "../shared/ucr")   # doctest: +SKIP
    >>> len(X), X[0].shape                                     # doctest: +SKIP
    (50, (150,))
    """
    root = os.fspath(data_dir)
    X_train, y_train = _read_any(_find_split(root, name, "TRAIN"))
    X_test, y_test = _read_any(_find_split(root, name, "TEST"))
    if normalize is not None:
        X_train = _normalize(X_train, normalize)
        X_test = _normalize(X_test, normalize)
    return X_train, y_train, X_test, y_test


def list_ucr(data_dir) -> list:
    """Names of the data sets stored in the UCR layout under ``data_dir`` (sorted)."""
    root = os.fspath(data_dir)
    if not os.path.isdir(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        if any(os.path.isfile(os.path.join(folder, f"{name}_TRAIN{ext}"))
               for ext in (".tsv", ".ts", ".txt")):
            out.append(name)
    return out


# --------------------------------------------------------------------------- .ts
_TRUE = {"true", "1", "yes"}


def read_ts(path):
    """Read a ``.ts`` file (the sktime / aeon / UEA-UCR multivariate archive format).

    Supported: ``@problemName``, ``@timeStamps false``, ``@missing``, ``@univariate``,
    ``@dimension(s)``, ``@equalLength``, ``@seriesLength``, ``@classLabel true <labels>``
    or ``@targetLabel true`` (regression), then ``@data`` lines of the form
    ``v,v,v:v,v,v:label`` (one ``:``-separated field per channel, ``?`` or ``NaN`` for
    a missing value). Trailing missing values are padding and are removed.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    X : list of ndarray, ``(T_i,)`` for one channel, ``(T_i, m)`` for several
    y : ndarray (N,) -- class labels (int64 or str), float64 targets for
        ``@targetLabel`` files, or None when the file has no labels.

    Raises
    ------
    ValueError
        Unsupported header (``@timeStamps true``), channels of different lengths within
        one series, inconsistent channel counts, or non-numeric values (the message
        names the line).
    """
    path = os.fspath(path)
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    has_labels, regression, in_data = None, False, False
    X, y = [], []
    n_channels = None
    for lineno, raw in enumerate(io.StringIO(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"read_ts: {path}, line {lineno}: expected a header "
                                 f"line starting with '@' before @data")
            key, _, rest = line[1:].partition(" ")
            key = key.lower()
            rest = rest.strip()
            if key == "data":
                in_data = True
            elif key == "timestamps" and rest.lower() in _TRUE:
                raise ValueError(f"read_ts: {path}: '@timeStamps true' files are not "
                                 f"supported (convert them to plain values first)")
            elif key == "classlabel":
                has_labels = rest.split(" ", 1)[0].lower() in _TRUE
            elif key == "targetlabel":
                has_labels = rest.split(" ", 1)[0].lower() in _TRUE
                regression = has_labels
            continue
        fields = line.split(":")
        if has_labels:
            label, fields = fields[-1].strip(), fields[:-1]
        else:
            label = None
        channels = []
        for c, field in enumerate(fields):
            vals = [v.strip() for v in field.split(",")]
            try:
                arr = np.array([np.nan if v in ("?", "", "NaN", "nan") else float(v)
                                for v in vals], dtype=np.float64)
            except ValueError:
                raise ValueError(f"read_ts: {path}, line {lineno}, channel {c}: "
                                 f"non-numeric value") from None
            channels.append(_strip_trailing_nan(arr))
        if not channels:
            raise ValueError(f"read_ts: {path}, line {lineno}: no values")
        if n_channels is None:
            n_channels = len(channels)
        elif len(channels) != n_channels:
            raise ValueError(f"read_ts: {path}, line {lineno}: {len(channels)} channels, "
                             f"the first series has {n_channels}")
        T = channels[0].size
        if any(ch.size != T for ch in channels):
            raise ValueError(f"read_ts: {path}, line {lineno}: channels have different "
                             f"lengths {[ch.size for ch in channels]}")
        if T == 0:
            raise ValueError(f"read_ts: {path}, line {lineno}: the series is empty")
        X.append(channels[0] if n_channels == 1 else np.stack(channels, axis=1))
        y.append(label)
    if not in_data:
        raise ValueError(f"read_ts: {path} has no @data section")
    if not X:
        raise ValueError(f"read_ts: {path} contains no series")
    if not has_labels:
        return X, None
    if regression:
        return X, np.array([float(v) for v in y], dtype=np.float64)
    return X, _labels(y)


# --------------------------------------------------------------------------- aeon
def load_classification(name: str, *, extract_path=None, normalize=None):
    """Download (or read from aeon's local copy) a UCR / UEA data set with aeon.

    A thin wrapper around ``aeon.datasets.load_classification`` that returns
    rntk-numba's layout (lists of ``(T_i,)`` / ``(T_i, m)`` arrays, unequal lengths kept).

    Parameters
    ----------
    name : str
    extract_path : str, optional
        Where aeon stores / looks for the files (aeon's default otherwise).
    normalize : {"l2", "znorm", None}, optional

    Returns
    -------
    X_train, y_train, X_test, y_test (as :func:`load_ucr`).

    Raises
    ------
    ImportError
        aeon is not installed (``pip install aeon``).
    OSError
        The data set could not be obtained (typically: no network). Use
        :func:`load_ucr` on a downloaded copy of the archive instead.
    """
    try:
        from aeon.datasets import load_classification as _aeon_load
    except ImportError as exc:  # pragma: no cover - aeon is a bench extra
        raise ImportError("load_classification needs aeon (pip install aeon); or use "
                          "load_ucr(name, data_dir) on a downloaded archive") from exc
    from .sequences import from_channels_first
    out = []
    for split in ("train", "test"):
        try:
            kwargs = {"split": split}
            if extract_path is not None:
                kwargs["extract_path"] = os.fspath(extract_path)
            X, y = _aeon_load(name, **kwargs)
        except Exception as exc:   # aeon raises URLError / ValueError / OSError
            raise OSError(
                f"load_classification: could not obtain {name!r} through aeon "
                f"({type(exc).__name__}: {exc}). Without a network, download the UCR "
                f"archive elsewhere and use load_ucr({name!r}, data_dir)") from exc
        series = from_channels_first(X)
        if series and series[0].shape[1] == 1:
            series = [s[:, 0].copy() for s in series]
        out.extend([series, _labels(y)])
    if normalize is not None:
        out[0] = _normalize(out[0], normalize)
        out[2] = _normalize(out[2], normalize)
    return tuple(out)


# --------------------------------------------------------------------------- demo
def load_demo(normalize=None):
    """The bundled GunPoint data set (UCR archive 2018; 50 training and 150 test
    univariate series of length 150, two classes).

    Parameters
    ----------
    normalize : {"l2", "znorm", None}, optional

    Returns
    -------
    X_train : list of 50 ndarray (150,)
    y_train : ndarray (50,) int64
    X_test : list of 150 ndarray (150,)
    y_test : ndarray (150,) int64
    """
    ref = resources.files("rntk_numba").joinpath("data", "gunpoint.npz")
    with ref.open("rb") as fh, np.load(fh) as z:
        Xtr = np.asarray(z["X_train"], dtype=np.float64)
        ytr = np.asarray(z["y_train"], dtype=np.int64)
        Xte = np.asarray(z["X_test"], dtype=np.float64)
        yte = np.asarray(z["y_test"], dtype=np.int64)
    Xtr, Xte = list(Xtr), list(Xte)
    if normalize is not None:
        Xtr, Xte = _normalize(Xtr, normalize), _normalize(Xte, normalize)
    return Xtr, ytr, Xte, yte


# --------------------------------------------------------------------------- normalise
def normalize(X, method: str = "l2"):
    """Normalise every series of a (ragged) set on its own.

    Parameters
    ----------
    X : sequence set (any layout ``pack`` accepts)
    method : {"l2", "znorm", "none"}
        ``"l2"``: divide each series by its L2 norm over all time steps and channels
        (the paper's preprocessing; a series of zeros is left unchanged).
        ``"znorm"``: per series and channel, subtract the mean and divide by the
        standard deviation (a constant channel is only centred).
        ``"none"``: a copy.

    Returns
    -------
    list of float64 arrays: ``(T_i,)`` when the set is univariate, ``(T_i, m)`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> Z = normalize([np.array([3.0, 4.0]), np.ones(5)])
    >>> [round(float(np.linalg.norm(z)), 12) for z in Z]
    [1.0, 1.0]
    """
    if not isinstance(method, str) or method.lower() not in NORMALIZATIONS:
        raise ValueError(f"normalize: method must be one of {NORMALIZATIONS}, "
                         f"got {method!r}")
    method = method.lower()
    P = pack(X)
    out = []
    for i in range(P.n):
        s = P.series(i).copy()
        if method == "l2":
            nrm = float(np.sqrt(np.sum(s * s)))
            if nrm > 0:
                s /= nrm
        elif method == "znorm":
            s -= s.mean(axis=0, keepdims=True)
            sd = s.std(axis=0, keepdims=True)
            s /= np.where(sd > 0, sd, 1.0)
        out.append(s[:, 0].copy() if P.m == 1 else s)
    return out



_normalize = normalize   # for the loaders, whose keyword argument shadows the name
