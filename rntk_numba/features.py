"""``rntk features``: Nyström features of a sequence set from the command line.

One command for the scale path (:class:`rntk_numba.RNTKNystroem`), in two steps:

1. the **map**: when ``--map FILE`` does not exist, landmarks are chosen from the input
   and the fitted map is written there (atomically: a kill leaves no half-written
   map); when it exists, it is loaded and reused, so the features of a test set come
   from the training set's landmarks and its normalisation. The map is a scikit-learn
   pipeline ``(SeriesNormalizer, RNTKNystroem)``: in Python, ``pickle.load(f)
   .transform(X)`` gives the same features;
2. the **features** of the input, written to ``--out FILE.npy`` chunk by chunk
   (:meth:`~rntk_numba.RNTKNystroem.transform_to_file`): memory stays at one chunk
   whatever N, and a rerun after a kill continues at the first unfinished chunk with
   the same bits as an uninterrupted run.

Typical use::

    rntk features train.npz --map map.pkl --out train.npy --n-components 1024 \\
        --kernel sigma_w=1.34,sigma_b=2 --dtype float32
    rntk features test.npz --map map.pkl --out test.npy

The inputs are those of ``rntk gram`` (``.npy``, ``.npz``, ``.tsv``, ``.ts``, ``--ucr``).
The map is a pickle: load only maps you wrote. Fitting options (``--kernel``,
``--n-components``, ``--normalize``, ...) given with an existing map must agree with
it, or the command stops (exit 2) rather than silently use another map; without
``--normalize``, the map's normalisation is applied.

Exit codes: 0 done; 2 bad input or options; 1 a failure while computing or writing;
130 interrupted (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

import numpy as np

from .batch import (EXIT_CODES_EPILOG, INPUTS_EPILOG, BadInput, _log,
                    add_cluster_arguments, add_input_arguments, cluster_context,
                    load_inputs, parse_kernel)

__all__ = ["run", "register"]

#: fitting options: (command-line dest, RNTKNystroem parameter, default)
_FIT_OPTIONS = (("n_components", "n_components", 256),
                ("landmarks", "landmarks", "rpcholesky"),
                ("random_state", "random_state", 0),
                ("kind", "kind", "ntk"),
                ("kernel_scaling", "kernel_scaling", "cosine"),
                ("dtype", "dtype", "float64"))


def _map_pipeline(method: str, nys):
    """The map as written: (SeriesNormalizer(method), the fitted RNTKNystroem)."""
    from sklearn.pipeline import Pipeline
    from .inputs import SeriesNormalizer
    norm = SeriesNormalizer(method)
    norm.n_channels_ = nys.n_channels_          # stateless but for the channel check
    return Pipeline([("normalize", norm), ("nystroem", nys)])


def _load_map(path: str):
    """(normalisation method, fitted RNTKNystroem) of a map file: a pipeline written
    by this command, or a bare fitted RNTKNystroem (no normalisation)."""
    from sklearn.pipeline import Pipeline
    from .inputs import SeriesNormalizer
    from .nystroem import RNTKNystroem
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            IndexError) as exc:
        raise BadInput(f"--map {path}: not a map written by rntk features "
                       f"({type(exc).__name__}: {exc})") from None
    method, nys = "none", obj
    if (isinstance(obj, Pipeline) and len(obj.steps) == 2
            and isinstance(obj.steps[0][1], SeriesNormalizer)):
        method, nys = obj.steps[0][1].method, obj.steps[1][1]
    if not isinstance(nys, RNTKNystroem) or not hasattr(nys, "normalization_"):
        raise BadInput(f"--map {path}: holds a {type(obj).__name__}, not a map written "
                       f"by rntk features (a SeriesNormalizer and a fitted "
                       f"RNTKNystroem)")
    return method, nys


def _check_agrees(nys, method: str, args, kernel: dict, path: str) -> None:
    """Every fitting option given on the command line must match the loaded map."""
    params = dict(nys.get_params(), normalize=method)
    asked = dict(kernel)
    if args.normalize is not None:
        asked["normalize"] = args.normalize
    for dest, name, _ in _FIT_OPTIONS:
        if getattr(args, dest) is not None:
            asked[name] = getattr(args, dest)
    for name, value in asked.items():
        have = params[name]
        same = (np.dtype(have) == np.dtype(value)) if name == "dtype" else have == value
        if not same:
            raise BadInput(f"--map {path} was fitted with {name}={have!r}, but "
                           f"{value!r} is asked: remove the map to fit a new one, or "
                           f"drop the option")


def _write_map(obj, path: str) -> None:
    """Pickle the fitted map to ``path`` through a temporary file and a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_labels(labels, path: str) -> None:
    """``np.save`` through a temporary file and a rename."""
    tmp = f"{path}.tmp{os.getpid()}.npy"
    try:
        np.save(tmp, labels, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare(args):
    """(map, whether it is to be fitted, packed input, description): options and
    inputs, checked before anything is computed."""
    if args.n_jobs is not None and args.n_jobs == 0:
        raise BadInput("--n-jobs must not be 0 (a positive count, or -1 for all cores)")
    for name in ("n_components", "chunk_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    files = [("--map", args.map), ("--out", args.out)]
    if args.labels_out is not None:
        files.append(("--labels-out", args.labels_out))
    for flag, path in files[1:]:
        if os.path.splitext(path)[1].lower() != ".npy":
            raise BadInput(f"{flag} {path}: expected a .npy file")
    if len({os.path.abspath(path) for _, path in files}) < len(files):
        raise BadInput(f"{', '.join(flag for flag, _ in files)} must name different "
                       f"files")
    for flag, path in files:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise BadInput(f"{flag} {path}: the folder {folder} does not exist")
    kernel = parse_kernel(args.kernel)
    fitting = not os.path.exists(args.map)
    # the map first (cheap), then the input (possibly millions of series)
    if fitting:
        from .nystroem import RNTKNystroem
        params = {name: (default if getattr(args, dest) is None else getattr(args, dest))
                  for dest, name, default in _FIT_OPTIONS}
        try:
            nys = RNTKNystroem(**kernel, **params)
            nys._check_params()
            nys._kernel()
        except (TypeError, ValueError) as exc:
            raise BadInput(str(exc)) from None
    else:
        method, nys = _load_map(args.map)
        _check_agrees(nys, method, args, kernel, args.map)
        args.normalize = None if method == "none" else method
    args.y = None                       # load_inputs reads --y; this command has none
    PX, _, info, labels = load_inputs(args)
    if args.labels_out is not None:
        if labels is None:
            raise BadInput(f"--labels-out: {info['X']['source']} carries no labels "
                           f"(.tsv, .ts and --ucr inputs do)")
        labels = np.asarray(labels)
        if labels.dtype == object:
            labels = labels.astype(str)
    if fitting and nys.n_components > PX.n:
        raise BadInput(f"--n-components {nys.n_components} is larger than the input "
                       f"({PX.n} series): the map's landmarks are chosen from it")
    if not fitting and PX.m != nys.n_channels_:
        raise BadInput(f"{info['X']['source']} has {PX.m} channels per time step, the "
                       f"map {args.map} was fitted on {nys.n_channels_}")
    return nys, fitting, PX, info, labels


def run(args) -> int:
    """The ``rntk features`` command (see the module docstring)."""
    t_start = time.perf_counter()
    try:
        nys, fitting, PX, info, labels = _prepare(args)
    except (BadInput, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as exc:
        _log(f"rntk features: error: {exc}")
        return 2
    tty = sys.stderr.isatty() and not args.quiet
    nys.set_params(n_jobs=args.n_jobs, progress=tty, chunk_size=args.chunk_size)
    ctx, rc = cluster_context(args, "features")
    if ctx is None:
        return rc
    fit_s = 0.0
    try:
        if args.labels_out is not None:
            _write_labels(labels, args.labels_out)
        with ctx:
            if fitting:
                t0 = time.perf_counter()
                nys.fit(PX)
                fit_s = time.perf_counter() - t0
                _write_map(_map_pipeline(args.normalize or "none", nys), args.map)
                if not args.quiet:
                    _log(f"rntk features: fitted {nys.n_components} landmarks "
                         f"({nys.landmarks}) on {PX.n} series in {fit_s:.2f} s -> "
                         f"{args.map}")
            def announce(rows):
                if 0 < rows < PX.n and not args.quiet:
                    _log(f"rntk features: resuming {args.out} at series {rows} of "
                         f"{PX.n}")
            t0 = time.perf_counter()
            F, start = nys._to_file(PX, args.out, not args.no_resume, announce)
            transform_s = time.perf_counter() - t0
            shape, dtype = list(F.shape), str(F.dtype)
            del F
    except KeyboardInterrupt:
        _log("rntk features: interrupted; rerun the same command to resume")
        return 130
    except (ValueError, TypeError) as exc:        # e.g. a kernel that overflows
        _log(f"rntk features: error: {exc}")
        return 2
    except Exception as exc:
        _log(f"rntk features: failed: {type(exc).__name__}: {exc}")
        return 1
    status = ("up to date" if start == PX.n else
              "resumed" if start else "computed")
    if not args.quiet:
        _log(f"rntk features: {status} {shape[0]}x{shape[1]} {dtype} -> {args.out} "
             f"in {transform_s:.2f} s")
    if args.json:
        summary = {"inputs": info, "map": os.path.abspath(args.map),
                   "map_status": "fitted" if fitting else "loaded",
                   "normalize": args.normalize or "none",
                   "kernel": nys.kernel_.to_dict(), "params": {
                       name: nys.get_params()[name] for _, name, _ in _FIT_OPTIONS},
                   "landmark_indices_sha256": _sha(nys.landmark_indices_),
                   "out": os.path.abspath(args.out), "shape": shape, "dtype": dtype,
                   "labels_out": (None if args.labels_out is None
                                  else os.path.abspath(args.labels_out)),
                   "status": status, "rows_resumed": int(start),
                   "fit_seconds": round(fit_s, 6),
                   "transform_seconds": round(transform_s, 6),
                   "seconds": round(time.perf_counter() - t_start, 6)}
        print(json.dumps(summary, indent=1, default=str))
    return 0


def _sha(a) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def register(subparsers) -> None:
    """Add ``rntk features`` to the ``rntk`` command."""
    p = subparsers.add_parser(
        "features", help="Nyström features of a sequence set to a .npy file "
                         "(resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a Nyström map (landmarks from the input) or load one, then "
                    "write the input's features to a .npy file chunk by chunk; a rerun "
                    "after a kill resumes with the same bits.",
        epilog=INPUTS_EPILOG + "the map is a pickle: load only maps you wrote\n" +
               EXIT_CODES_EPILOG +
               "example: rntk features --ucr FordA --data-dir ../shared/ucr-large "
               "--map forda.pkl --out train.npy \\\n"
               "    --kernel sigma_w=1.34,sigma_b=2,readout=mean --n-components 1024\n"
               "         rntk features --ucr FordA --data-dir ../shared/ucr-large "
               "--split test --map forda.pkl --out test.npy")
    add_input_arguments(p, "the series")
    p.add_argument("--map", required=True, metavar="FILE",
                   help="the fitted map: loaded if it exists, else fitted on the input "
                        "and written there")
    p.add_argument("--out", required=True, metavar="FILE.npy",
                   help="where the features go (N x n_components)")
    g = p.add_argument_group("fitting a new map (with an existing map: must agree)")
    g.add_argument("--kernel", default=None, metavar="K=V,...",
                   help="RNTK hyperparameters, e.g. sigma_w=1.34,sigma_b=2,readout=mean")
    g.add_argument("--n-components", type=int, default=None, metavar="M",
                   help="landmarks = features (default 256)")
    g.add_argument("--landmarks", default=None, choices=("rpcholesky", "uniform"),
                   help="landmark selection (default rpcholesky)")
    g.add_argument("--random-state", type=int, default=None, metavar="SEED",
                   help="seed of the landmark selection (default 0)")
    g.add_argument("--kind", default=None, choices=("ntk", "nngp"),
                   help="kernel (default ntk)")
    g.add_argument("--kernel-scaling", default=None, choices=("cosine", "none"),
                   help="default cosine")
    g.add_argument("--dtype", default=None, choices=("float64", "float32"),
                   help="of the features (default float64)")
    p.add_argument("--labels-out", default=None, metavar="FILE.npy",
                   help="also write the input's labels there (.tsv, .ts, --ucr), in "
                        "the order of the features")
    p.add_argument("--chunk-size", type=int, default=None, metavar="ROWS",
                   help="series per chunk written (default: a 64 MiB kernel block; "
                        "never changes a bit)")
    p.add_argument("--no-resume", action="store_true",
                   help="start the features over even if a matching partial file "
                        "exists")
    add_cluster_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
