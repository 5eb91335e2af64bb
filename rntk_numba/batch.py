"""``rntk gram``: batch Gram jobs from the command line, through the on-disk store.

Every setting of a kernel grid is computed into the Gram store (skipping what is there,
resuming what a kill interrupted), optionally on an existing Dask cluster; one result
can be written to ``.npy`` / ``.h5``; a JSON summary goes to stdout.

Inputs (``X``, and optionally ``--y`` for a cross kernel ``K(X, Y)``):

* ``.npy`` -- a float array ``(N, T)`` (univariate) or ``(N, T, m)``; rows that are NaN
  in every channel at the end of a series are padding (ragged sets);
* ``.npz`` -- a ragged set stored back to back: ``values`` ``(sum T_i,)`` or
  ``(sum T_i, m)``, ``offsets`` ``(N + 1,)`` (series i is
  ``values[offsets[i]:offsets[i + 1]]``; ``offsets[0] == 0``, non-decreasing,
  ``offsets[-1] == len(values)``) and optionally ``lengths`` ``(N,)``, which must equal
  ``diff(offsets)`` (``offsets`` may then be given as the N start positions instead);
* ``.tsv`` (UCR archive files, the label in the first column) and ``.ts`` files;
* ``--ucr NAME --data-dir DIR [--split train|test|both]``; with ``--ucr``, ``--y train``
  / ``--y test`` names a split of the same data set.

The data are used as given -- the store's key is that of ``gram`` on the same array --
unless ``--normalize l2|znorm`` asks otherwise.

Exit codes: 0 done; 2 bad input (the message names the file, series and position, or
the bad option); 1 a failure while computing or writing; 130 interrupted (a rerun
resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import time

import numpy as np

from .params import RNTK
from .sequences import PackedSequences, pack

__all__ = ["BadInput", "parse_kernel", "parse_grid", "settings", "read_sequences",
           "run", "register"]

KINDS = ("ntk", "nngp", "both")
_FIELDS = {f.name: f for f in dataclasses.fields(RNTK)}
_OUT_CHUNK_BYTES = 64 << 20          # rows written to --out per read of the entry


class BadInput(ValueError):
    """Bad input or options: exit code 2."""


# --------------------------------------------------------------------------- kernel
def _value(name: str, text: str):
    """One hyperparameter value from its command-line text."""
    if name not in _FIELDS:
        raise BadInput(f"unknown kernel parameter {name!r}; known: "
                       f"{', '.join(_FIELDS)}")
    text = text.strip()
    if name in ("activation", "readout"):
        return text
    if name == "n_layers":
        try:
            return int(text)
        except ValueError:
            raise BadInput(f"n_layers: expected an integer, got {text!r}") from None
    if text.lower() in ("sqrt2", "sqrt(2)"):
        return math.sqrt(2.0)
    try:
        return float(text)
    except ValueError:
        raise BadInput(f"{name}: expected a number (or sqrt2), got {text!r}") from None


def parse_kernel(text: str | None) -> dict:
    """``"sigma_w=1.4,sigma_b=0.1"`` -> ``{"sigma_w": 1.4, "sigma_b": 0.1}``."""
    out = {}
    if not text:
        return out
    for part in text.split(","):
        if not part.strip():
            continue
        name, eq, val = part.partition("=")
        name = name.strip()
        if not eq or not val.strip():
            raise BadInput(f"--kernel: expected NAME=VALUE, got {part.strip()!r}")
        if name in out:
            raise BadInput(f"--kernel: {name} given twice")
        out[name] = _value(name, val)
    return out


def parse_grid(items) -> list:
    """``["sigma_b=0,0.1", "readout=last,mean"]`` -> ``[(axis, [values]), ...]``."""
    axes = []
    for item in items or ():
        name, eq, vals = item.partition("=")
        name = name.strip()
        if not eq or not vals.strip():
            raise BadInput(f"--grid: expected NAME=V1,V2,..., got {item!r}")
        if name in dict(axes):
            raise BadInput(f"--grid: axis {name} given twice")
        values = [_value(name, v) for v in vals.split(",") if v.strip()]
        if not values:
            raise BadInput(f"--grid: axis {name} has no values")
        axes.append((name, values))
    return axes


def settings(base: dict, axes: list) -> list:
    """Every setting of the grid (the last axis varies fastest), as ``RNTK`` objects."""
    names = [a for a, _ in axes]
    out, seen = [], set()
    for combo in itertools.product(*(v for _, v in axes)):
        params = dict(base)
        params.update(zip(names, combo))
        try:
            k = RNTK(**params)
        except (TypeError, ValueError) as exc:
            raise BadInput(str(exc)) from None
        if k not in seen:                   # e.g. sqrt2 and 1.4142135623730951
            seen.add(k)
            out.append(k)
    return out


# --------------------------------------------------------------------------- inputs
def _read_npy(path: str):
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BadInput(f"{path}: not a plain numeric .npy array ({exc})") from None
    if not isinstance(a, np.ndarray) or a.ndim not in (2, 3):
        raise BadInput(f"{path}: expected an array (N, T) or (N, T, m), got shape "
                       f"{getattr(a, 'shape', None)}")
    return a


def _read_npz(path: str):
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BadInput(f"{path}: not a readable .npz file ({exc})") from None
    with z:
        missing = [k for k in ("values", "offsets") if k not in z.files]
        if missing:
            raise BadInput(f"{path}: a ragged set needs arrays 'values' and 'offsets' "
                           f"(and optionally 'lengths'); missing {missing}, found "
                           f"{z.files}")
        values = z["values"]
        offsets = z["offsets"]
        lengths = z["lengths"] if "lengths" in z.files else None
    if values.ndim not in (1, 2):
        raise BadInput(f"{path}: 'values' must be (sum T_i,) or (sum T_i, m), got "
                       f"shape {values.shape}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise BadInput(f"{path}: 'offsets' must be a 1-D integer array, got "
                       f"{offsets.dtype} {offsets.shape}")
    offsets = offsets.astype(np.int64)
    if lengths is not None:
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
            raise BadInput(f"{path}: 'lengths' must be a 1-D integer array, got "
                           f"{lengths.dtype} {lengths.shape}")
        lengths = lengths.astype(np.int64)
        if offsets.size == lengths.size:            # start positions + lengths
            offsets = np.append(offsets, offsets[-1] + lengths[-1] if lengths.size
                                else 0)
    if offsets.size < 2:
        raise BadInput(f"{path}: 'offsets' must hold N + 1 >= 2 boundaries, got "
                       f"{offsets.size}")
    if offsets[0] != 0:
        raise BadInput(f"{path}: offsets[0] must be 0, got {offsets[0]}")
    steps = np.diff(offsets)
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0])
        raise BadInput(f"{path}: offsets decrease at series {i} "
                       f"(offsets[{i}] = {offsets[i]} > offsets[{i + 1}] = "
                       f"{offsets[i + 1]})")
    if offsets[-1] != values.shape[0]:
        raise BadInput(f"{path}: offsets[-1] = {offsets[-1]} but 'values' has "
                       f"{values.shape[0]} time steps")
    if lengths is not None:
        if lengths.size != steps.size:
            raise BadInput(f"{path}: 'lengths' has {lengths.size} entries for "
                           f"{steps.size} series")
        bad = np.flatnonzero(lengths != steps)
        if bad.size:
            i = int(bad[0])
            raise BadInput(f"{path}: series {i}: lengths[{i}] = {lengths[i]} but the "
                           f"offsets give {steps[i]}")
    if values.dtype.kind in "biuf" and (steps > 0).all() and values.size:
        # already packed and clean (the common case): no per-series list, no copy of
        # a float64 file; anything else goes through pack's checks and messages
        v = np.ascontiguousarray(values.reshape(values.shape[0], -1), dtype=np.float64)
        if np.isfinite(v).all():
            return PackedSequences(v, offsets, steps)
    return [values[offsets[i]:offsets[i + 1]] for i in range(steps.size)]


def read_sequences(path: str):
    """(sequence set, labels or None) from a ``.npy`` / ``.npz`` / ``.tsv`` / ``.ts`` file.

    Raises
    ------
    BadInput
        Unknown extension or a malformed file (the message names the file).
    FileNotFoundError
    """
    from .datasets import read_ts, read_ucr_tsv
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return _read_npy(path), None
    if ext == ".npz":
        return _read_npz(path), None
    if ext in (".tsv", ".txt"):
        return read_ucr_tsv(path)
    if ext == ".ts":
        return read_ts(path)
    raise BadInput(f"{path}: unknown input type {ext!r} (expected .npy, .npz, .tsv or "
                   f".ts)")


def _ucr(args, split: str):
    from .datasets import load_ucr
    if args.data_dir is None:
        raise BadInput("--ucr needs --data-dir DIR (the archive's root)")
    Xtr, ytr, Xte, yte = load_ucr(args.ucr, args.data_dir)
    if split == "train":
        return Xtr, ytr
    if split == "test":
        return Xte, yte
    return list(Xtr) + list(Xte), np.concatenate([np.asarray(ytr), np.asarray(yte)])


def load_inputs(args):
    """(PX, PY or None, description dict, X's labels or None) from the parsed
    arguments (labels come with .tsv, .ts and --ucr inputs)."""
    from .datasets import normalize
    if (args.input is None) == (args.ucr is None):
        raise BadInput("give one input: a file (.npy, .npz, .tsv, .ts) or --ucr NAME")
    if args.ucr is not None:
        X, labels = _ucr(args, args.split)
        x_src = f"ucr:{args.ucr}:{args.split}"
    else:
        X, labels = read_sequences(args.input)
        x_src = args.input
    Y, y_src = None, None
    if args.y is not None:
        if args.ucr is not None and args.y in ("train", "test", "both"):
            Y, _ = _ucr(args, args.y)
            y_src = f"ucr:{args.ucr}:{args.y}"
        else:
            Y, _ = read_sequences(args.y)
            y_src = args.y
    if args.normalize is not None:
        X = normalize(X, args.normalize)
        Y = None if Y is None else normalize(Y, args.normalize)
    PX = pack(X, x_src)
    PY = None if Y is None else pack(Y, y_src)
    if PY is not None and PY.m != PX.m:
        raise BadInput(f"{x_src} has {PX.m} channels per time step, {y_src} has {PY.m}")

    def describe(P, src):
        return {"source": src, "n": P.n, "channels": P.m,
                "min_length": int(P.lengths.min()), "max_length": int(P.lengths.max())}
    info = {"X": describe(PX, x_src)}
    if PY is not None:
        info["Y"] = describe(PY, y_src)
    return PX, PY, info, labels


# --------------------------------------------------------------------------- output
def _write_out(path: str, results: dict, kernel: RNTK, key: str) -> None:
    """Write one setting's kernel(s) (GramArray handles) to ``.npy`` or ``.h5``, a band
    of rows at a time (the matrix is never held whole)."""
    ext = os.path.splitext(path)[1].lower()
    first = next(iter(results.values()))
    n, m = first.shape
    rows = max(1, _OUT_CHUNK_BYTES // (8 * max(m, 1)))
    tmp = f"{path}.tmp{os.getpid()}{ext}"
    try:
        if ext == ".npy":
            (arr,) = results.values()
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64,
                                            shape=(n, m))
            for r0 in range(0, n, rows):
                out[r0:r0 + rows] = arr[r0:r0 + rows]
            out.flush()
            del out
        else:
            import h5py
            with h5py.File(tmp, "w") as f:
                for kind, arr in results.items():
                    ds = f.create_dataset(kind, shape=(n, m), dtype="f8")
                    for r0 in range(0, n, rows):
                        ds[r0:r0 + rows] = arr[r0:r0 + rows]
                f.attrs["kernel"] = json.dumps(kernel.to_dict())
                f.attrs["key"] = key
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- run
def _dask_backend(address: str, timeout: float):
    """A context in which joblib runs tiles on the Dask cluster at ``address``."""
    import contextlib
    import joblib
    try:
        from distributed import Client
    except ImportError:
        raise BadInput("--scheduler needs dask.distributed "
                       "(pip install 'rntk-numba[dask]')") from None
    stack = contextlib.ExitStack()
    client = Client(address, timeout=f"{timeout}s")
    stack.callback(client.close)
    stack.enter_context(joblib.parallel_config(backend="dask"))
    return stack


def cluster_context(args, command: str):
    """``(context, None)`` in which to run (``--scheduler``'s Dask cluster, or nothing),
    or ``(None, exit code)`` after saying on stderr why not: 2 without
    dask.distributed, 1 when the scheduler cannot be reached."""
    import contextlib
    if not args.scheduler:
        return contextlib.nullcontext(), None
    try:
        return _dask_backend(args.scheduler, args.connect_timeout), None
    except BadInput as exc:
        _log(f"rntk {command}: error: {exc}")
        return None, 2
    except Exception as exc:            # cannot reach the scheduler
        _log(f"rntk {command}: failed: cannot connect to the Dask scheduler "
             f"{args.scheduler}: {exc}")
        return None, 1


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prepare(args):
    """Everything that can be wrong with the input, checked before computing."""
    if args.kind not in KINDS:
        raise BadInput(f"--kind must be one of {KINDS}, got {args.kind!r}")
    if args.n_jobs is not None and args.n_jobs == 0:
        raise BadInput("--n-jobs must not be 0 (a positive count, or -1 for all cores)")
    if args.tile_size is not None and args.tile_size < 1:
        raise BadInput(f"--tile-size must be >= 1, got {args.tile_size}")
    base = parse_kernel(args.kernel)
    axes = parse_grid(args.grid)
    for name, _ in axes:
        if name in base:
            raise BadInput(f"{name} is both in --kernel and a --grid axis")
    ks = settings(base, axes)
    if args.out is not None:
        ext = os.path.splitext(args.out)[1].lower()
        if ext not in (".npy", ".h5", ".hdf5"):
            raise BadInput(f"--out {args.out}: expected a .npy or .h5 file")
        if len(ks) != 1:
            raise BadInput(f"--out writes a single result, but the grid has {len(ks)} "
                           f"settings (drop --out: every setting is in the store)")
        if ext == ".npy" and args.kind == "both":
            raise BadInput("--kind both has two matrices: use --out FILE.h5")
    PX, PY, info, _ = load_inputs(args)
    return ks, PX, PY, info


def run(args) -> int:
    """The ``rntk gram`` command (see the module docstring)."""
    t_start = time.perf_counter()
    try:
        ks, PX, PY, info = _prepare(args)
    except (BadInput, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as exc:
        _log(f"rntk gram: error: {exc}")
        return 2
    from .store import GramStore
    try:
        store = GramStore(args.cache) if args.cache else GramStore()
    except ValueError as exc:
        _log(f"rntk gram: error: --cache: {exc}")
        return 2
    shape = [PX.n, PX.n if PY is None else PY.n]
    tty = sys.stderr.isatty() and not args.quiet
    rows = []
    ctx, rc = cluster_context(args, "gram")
    if ctx is None:
        return rc
    outer = None
    if tty and len(ks) > 1:                 # a bar over the settings on a terminal
        from tqdm.auto import tqdm
        outer = tqdm(total=len(ks), desc="rntk gram", unit="setting", position=0)
    say = outer.write if outer is not None else _log
    try:
        with ctx:
            for i, k in enumerate(ks):
                before = dict(store.stats)
                t0 = time.perf_counter()
                res = store.gram(PX, PY, kernel=k, kind=args.kind, n_jobs=args.n_jobs,
                                 progress=tty, tile_size=args.tile_size,
                                 out_of_core=True)
                seconds = time.perf_counter() - t0
                arrays = dict(zip(("ntk", "nngp"), res)) if args.kind == "both" \
                    else {args.kind: res}
                try:
                    key = next(iter(arrays.values())).key
                    delta = {c: store.stats.get(c, 0) - before.get(c, 0)
                             for c in ("hits", "tiles_computed", "tiles_resumed")}
                    status = ("hit" if delta["hits"] else
                              "resumed" if delta["tiles_resumed"] else "computed")
                    if args.out is not None:
                        _write_out(args.out, arrays, k, key)
                finally:
                    for a in arrays.values():
                        a.close()
                rows.append({"kernel": k.to_dict(), "label": str(k), "kind": args.kind,
                             "key": key, "shape": shape, "status": status,
                             "seconds": round(seconds, 6),
                             "tiles_computed": delta["tiles_computed"],
                             "tiles_resumed": delta["tiles_resumed"]})
                if not args.quiet:
                    say(f"[{i + 1}/{len(ks)}] {k}: {status} "
                        f"{shape[0]}x{shape[1]} in {seconds:.2f} s (key {key[:12]})")
                if outer is not None:
                    outer.update(1)
    except KeyboardInterrupt:
        _log("rntk gram: interrupted; rerun the same command to resume")
        return 130
    except Exception as exc:
        _log(f"rntk gram: failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if outer is not None:
            outer.close()
    summary = {"store": os.path.abspath(store.path), "inputs": info, "kind": args.kind,
               "settings": rows, "out": args.out,
               "computed": sum(r["status"] != "hit" for r in rows),
               "hits": sum(r["status"] == "hit" for r in rows),
               "seconds": round(time.perf_counter() - t_start, 6)}
    if args.json:
        print(json.dumps(summary, indent=1))
    return 0


#: the ``--help`` lines on inputs and exit codes, shared by the batch commands
INPUTS_EPILOG = ("inputs: .npy (N, T) / (N, T, m) with trailing-NaN padding; .npz ragged "
                 "set (values, offsets[, lengths]); UCR .tsv; .ts\n")
EXIT_CODES_EPILOG = "exit codes: 0 done, 2 bad input, 1 failure, 130 interrupted\n"


def add_input_arguments(p, name: str) -> None:
    """The input options ``load_inputs`` reads (shared by ``rntk features``)."""
    p.add_argument("input", nargs="?", default=None,
                   help=f"{name}: a .npy, .npz, .tsv or .ts file (or use --ucr)")
    p.add_argument("--ucr", default=None, metavar="NAME", help="a UCR data set")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="the UCR archive's root (with --ucr)")
    p.add_argument("--split", default="train", choices=("train", "test", "both"),
                   help=f"the UCR split used as {name} (default train)")
    p.add_argument("--normalize", default=None, choices=("l2", "znorm"),
                   help="normalise every series first (default: data as given)")


def add_cluster_arguments(p) -> None:
    """Workers and the Dask cluster (``_dask_backend``)."""
    p.add_argument("--n-jobs", type=int, default=None, metavar="N",
                   help="parallel workers (default: all cores, or all Dask workers)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the Dask cluster at ADDRESS (joblib's Dask backend), "
                        "e.g. tcp://host:8786")
    p.add_argument("--connect-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="how long to try to reach the scheduler (default 20)")


def register(subparsers) -> None:
    """Add ``rntk gram`` to the ``rntk`` command."""
    p = subparsers.add_parser(
        "gram", help="compute RNTK Gram matrices (a grid of settings) into the store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute the Gram matrix of a sequence set (or the cross kernel "
                    "K(X, Y)) for every setting of a kernel grid, into the on-disk "
                    "store: what is stored is skipped, what a kill interrupted is "
                    "resumed.",
        epilog=INPUTS_EPILOG + EXIT_CODES_EPILOG +
               "example: rntk gram --ucr GunPoint --data-dir ../shared/ucr "
               "--normalize l2 \\\n    --kernel sigma_w=sqrt2 --grid sigma_b=0,0.1 "
               "--grid readout=last,mean --json")
    add_input_arguments(p, "X")
    p.add_argument("--y", default=None, metavar="FILE",
                   help="Y for the cross kernel K(X, Y): a file, or with --ucr a split "
                        "name (train / test / both)")
    p.add_argument("--kernel", default=None, metavar="K=V,...",
                   help="RNTK hyperparameters, e.g. sigma_w=1.4,sigma_b=0.1,readout=mean "
                        "(others at their defaults)")
    p.add_argument("--grid", action="append", default=[], metavar="AXIS=V1,V2,...",
                   help="a grid axis (repeatable); every combination is computed")
    p.add_argument("--kind", default="ntk", help="ntk (default), nngp or both")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="store directory (default $RNTK_CACHE_DIR, else ./cache)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the result (single setting) to FILE.npy or FILE.h5")
    p.add_argument("--tile-size", type=int, default=None, metavar="ROWS",
                   help="rows per tile (default cost-based; never changes the result)")
    add_cluster_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout (keys, shapes, times, hit or "
                        "computed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
