"""Nyström features of the RNTK (issue 11): fidelity, linear learners, scale, peers.

    python scripts/bench_nystroem.py --out results/nystroem                 # every stage
    python scripts/bench_nystroem.py --stage fidelity --datasets GunPoint,FordA
    python scripts/bench_nystroem.py --stage scale --scale-n 50000           # reduced N
    python scripts/bench_nystroem.py --quick --out /tmp/nys_smoke            # smoke run

Stages (``--stage``, comma-separated; default all):

* ``fidelity`` -- on the UCR sets (``--data-dir``) and FordA (``--large-dir``): the exact
  RNTK SVC (cosine-scaled precomputed Gram) against (a) the same SVC (same C) on the
  approximate Gram ``Phi Phi^T`` and (b) linear learners on ``Phi``, for every m of
  ``--m`` below the training-set size plus the target m = min(2048, N_train // 2);
  relative Frobenius and spectral error of ``Phi Phi^T`` against the exact cross-form
  cosine training Gram; fit / predict times of both pipelines; rpcholesky and uniform
  landmarks over ``--seeds``. The kernel hyperparameters and C are FIXED per set: the
  RNTK-mean settings the UCR benchmark's training CV chose (BENCHMARKS.md, "The mean
  read-out"), and for FordA the mean read-out with (sigma_w, sigma_b) among
  ``--forda-kernels`` and C chosen jointly by a 5-fold training CV of the exact SVC.
  Beside (a), the "rank-m optimum": the same SVC on the top-m eigenpairs of the exact
  training Gram (Eckart-Young), the bound no rank-m feature map beats in kernel error.
* ``learners`` -- linear learners on the features at the target m (rpcholesky, seed 0):
  LinearSVC (squared hinge, primal), LinearSVC (hinge, dual), RidgeClassifier,
  RidgeClassifierCV, SGDClassifier, StreamingRidgeClassifier (if present).
* ``crossover`` -- the N from which the Nyström pipeline (smallest m of ``--m`` within 1
  point of the exact SVC's test accuracy; that m is chosen on the test set: a cost
  measurement, not a model selection) is faster than the exact SVC, fit + predict, on
  FordA training subsets and on synthetic ragged sets.
* ``scale`` -- ``--scale-n`` synthetic ragged series (lengths uniform in [50, 350],
  ``--scale-classes`` classes): generation, packing, fit (m = ``--scale-m``), transform
  into an on-disk float32 memmap, a streaming ridge classifier over it, prediction on
  ``--scale-test`` held-out series; wall time, peak RSS (VmHWM, reset per stage), the
  transform's pair-steps/s against ``gram`` on a ``--rate-subset`` subset against the
  landmarks in the same run, and the exact Gram's extrapolated time and bytes.
* ``peers`` -- scikit-learn's ``Nystroem(kernel=callable)`` with a per-pair RNTK
  callable (on a subset, extrapolated and labelled so) and tslearn's GAK SVC
  (``TimeSeriesSVC(kernel="gak")``) on the synthetic data at doubling N within
  ``--tslearn-budget`` seconds, each next to the Nyström pipeline on the same data.

Every stage writes ``<stage>.csv`` and ``<stage>.md`` into ``--out``; ``report.md``
collects the Markdown of the stages run, headed by the CPU model (``lscpu``), the core
count, the load averages and the versions; ``fidelity.png`` plots accuracy against m.
Times are single runs on a machine that may be shared: read them with the load
averages printed beside them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _common import command, loadavg, out_dir, pyplot, versions, write_csv  # noqa: E402
from rntk_numba import RNTK, PackedSequences, gram, pack  # noqa: E402
from rntk_numba.datasets import list_ucr, load_ucr, normalize  # noqa: E402
from rntk_numba.estimators import SVM_MAX_ITER  # noqa: E402
from rntk_numba.nystroem import RNTKNystroem, _self_kernels  # noqa: E402
from rntk_numba.tiles import pair_steps  # noqa: E402

SQRT2 = math.sqrt(2.0)
STAGES = ("fidelity", "learners", "crossover", "scale", "peers")
M_GRID = (64, 128, 256, 512, 1024, 2048)
TARGET_M = 2048

#: Fixed kernel hyperparameters and C per UCR set: the RNTK-mean settings chosen by the
#: UCR benchmark's 10-fold training CV (BENCHMARKS.md, "The mean read-out"); relu, one
#: layer, sigma_u = sigma_v = 1, NTK, cosine scaling.
FIXED = {
    "ArrowHead": dict(sigma_w=1.34, sigma_b=0.0, C=10.0),
    "Beef": dict(sigma_w=1.34, sigma_b=0.0, C=100.0),
    "Coffee": dict(sigma_w=SQRT2, sigma_b=0.0, C=1.0),
    "CricketX": dict(sigma_w=1.34, sigma_b=2.0, C=100.0),
    "DistalPhalanxTW": dict(sigma_w=SQRT2, sigma_b=0.0, C=10.0),
    "ECG200": dict(sigma_w=SQRT2, sigma_b=2.0, C=10.0),
    "GunPoint": dict(sigma_w=1.34, sigma_b=0.0, C=10.0),
    "Herring": dict(sigma_w=1.47, sigma_b=2.0, C=100.0),
    "Lightning7": dict(sigma_w=1.34, sigma_b=0.5, sigma_h=0.5, C=10.0),
    "Meat": dict(sigma_w=SQRT2, sigma_b=0.0, C=10.0),
    "OliveOil": dict(sigma_w=1.34, sigma_b=0.1, C=1000.0),
    "Plane": dict(sigma_w=1.47, sigma_b=2.0, C=10.0),
    "AllGestureWiimoteX": dict(sigma_w=1.34, sigma_b=0.5, C=10.0),
    "GesturePebbleZ1": dict(sigma_w=1.34, sigma_b=0.5, C=10.0),
    "PLAID": dict(sigma_w=1.34, sigma_b=0.1, C=100.0),
    "PickupGestureWiimoteZ": dict(sigma_w=SQRT2, sigma_h=0.5, C=0.01),
}
#: FordA: the RNTK-mean kernel and C chosen jointly by 5-fold training CV of the exact
#: SVC over ``--forda-kernels`` x FORDA_C_GRID (the UCR sets' protocol); FORDA_KERNEL is
#: the fallback of the other stages when no fidelity run chose one.
FORDA_KERNEL = dict(sigma_w=SQRT2, sigma_b=0.0)
FORDA_KERNELS = "1.34:0,1.34:2,sqrt2:0,sqrt2:2"
FORDA_C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: C grid of the cross-validated LinearSVC (3-fold training CV).
LINSVC_C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: Ridge penalties searched by the ridge learners (GCV / efficient LOO).
RIDGE_ALPHAS = tuple(10.0 ** np.arange(-6, 2))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine
def machine_info():
    cpu = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu_model": cpu, "cores": os.cpu_count(), "loadavg": loadavg(),
            "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") *
                                  os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            **versions()}


def machine_line(info):
    return (f"CPU: {info['cpu_model']}, {info['cores']} cores, {info['mem_total_gb']} GB; "
            f"load average at start {info['loadavg']}; Python {info['python']}, NumPy "
            f"{info['numpy']}, numba {info['numba']}, scikit-learn {info['sklearn']}.")


def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss():
    return _status("VmRSS")


def reset_peak():
    """Reset VmHWM (Linux >= 4.0); returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak():
    return _status("VmHWM")


class AnonPeak:
    """Samples RssAnon (anonymous memory: excludes the memmap's file pages)."""

    def __init__(self, every=0.2):
        self.every, self.max = every, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.max = max(self.max, _status("RssAnon"))
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.max = max(self.max, _status("RssAnon"))


# --------------------------------------------------------------------------- data
def kernel_of(params) -> RNTK:
    return RNTK(sigma_w=params.get("sigma_w", SQRT2), sigma_b=params.get("sigma_b", 0.0),
                sigma_h=params.get("sigma_h", 0.0), readout=params.get("readout", "mean"))


def load_set(name, args):
    d = args.large_dir if name == "FordA" else args.data_dir
    Xtr, ytr, Xte, yte = load_ucr(name, d)
    return pack(normalize(Xtr, "l2")), np.asarray(ytr), \
        pack(normalize(Xte, "l2")), np.asarray(yte)


def synthetic(n, seed, n_classes=4, noise=0.5, lmin=50, lmax=350, chunk=50_000,
              as_list=False):
    """Ragged series with a class-dependent frequency and shape plus noise, unit L2 norm.

    Class c: frequency (0.030 or 0.045 cycles per step by c mod 2, +-10 % jitter), shape
    sine or tanh(3 sin) (by c // 2 mod 2), a further +8 % frequency per four classes,
    random phase, Gaussian noise of standard deviation ``noise``. Returns (X, y) with X
    a PackedSequences, or a list of 1-D views into chunk buffers if ``as_list``.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lmin, lmax + 1, size=n).astype(np.int64)
    y = rng.integers(0, n_classes, size=n)
    out_list = [] if as_list else None
    if not as_list:
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.empty((int(offsets[-1]), 1))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        L = lengths[a:b]
        c = y[a:b]
        sid = np.repeat(np.arange(b - a), L)
        starts = np.zeros(b - a, dtype=np.int64)
        np.cumsum(L[:-1], out=starts[1:])
        t = np.arange(int(L.sum())) - starts[sid]
        f = np.where(c % 2 == 0, 0.030, 0.045) * (1 + 0.08 * (c // 4)) \
            * (1 + 0.1 * rng.uniform(-1, 1, size=b - a))
        phase = rng.uniform(0, 2 * np.pi, size=b - a)
        s = np.sin(2 * np.pi * f[sid] * t + phase[sid])
        sq = (c // 2) % 2 == 1
        s = np.where(sq[sid], np.tanh(3 * s), s)
        s += noise * rng.standard_normal(s.size)
        norms = np.sqrt(np.add.reduceat(s * s, starts))
        s /= norms[sid]
        if as_list:
            out_list.extend(np.split(s, starts[1:]))
        else:
            o = int(offsets[a])
            values[o:o + s.size, 0] = s
    if as_list:
        return out_list, y
    return PackedSequences(values, offsets, lengths), y


def rows(P, idx):
    return P.subset(np.asarray(idx))


# --------------------------------------------------------------------------- pipelines
def cosine_gram(P, kernel, n_jobs):
    """Exact cosine-scaled training Gram (same-sample diagonal, as RNTKClassifier)."""
    G = np.asarray(gram(P, kernel=kernel, n_jobs=n_jobs))
    r = np.sqrt(np.diag(G))
    G /= r[:, None]                       # in place: at N = 32,000 G is 8 GB
    G /= r[None, :]
    return G, r


def cosine_cross(PA, PB, rootB, kernel, n_jobs):
    K = np.asarray(gram(PA, PB, kernel=kernel, n_jobs=n_jobs))
    rA = np.sqrt(_self_kernels(PA, kernel, "ntk"))
    return K / rA[:, None] / rootB[None, :]


def cross_form_diag(P, root, kernel, n_jobs):
    """Diagonal of the cross-form cosine Gram k(x, x) as different samples (differs from
    the same-sample one only when sigma_h > 0)."""
    d = np.empty(P.n)
    for i in range(P.n):
        Pi = P.subset([i])
        d[i] = np.asarray(gram(Pi, Pi, kernel=kernel, n_jobs=1))[0, 0]
    return d / root ** 2


def svc(C):
    from sklearn.svm import SVC
    return SVC(kernel="precomputed", C=C, max_iter=SVM_MAX_ITER)


def exact_pipeline(Ptr, ytr, Pte, yte, kernel, C, n_jobs):
    t0 = time.perf_counter()
    G, root = cosine_gram(Ptr, kernel, n_jobs)
    t1 = time.perf_counter()
    model = svc(C).fit(G, ytr)
    t2 = time.perf_counter()
    Kte = cosine_cross(Pte, Ptr, root, kernel, n_jobs)
    pred = model.predict(Kte)
    t3 = time.perf_counter()
    return {"acc": 100 * float(np.mean(pred == yte)), "gram_s": t1 - t0,
            "svc_s": t2 - t1, "fit_s": t2 - t0, "predict_s": t3 - t2,
            "G": G, "root": root, "Kte": Kte}


def choose_C(G, y, grid, seed=0):
    from sklearn.model_selection import StratifiedKFold
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(G, y))
    scores = []
    for C in grid:
        acc = []
        for tr, va in folds:
            m = svc(C).fit(G[np.ix_(tr, tr)], y[tr])
            acc.append(np.mean(m.predict(G[np.ix_(va, tr)]) == y[va]))
        scores.append(float(np.mean(acc)))
    best = int(np.argmax(scores))
    return grid[best], scores


def learner(name, C, n):
    from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV, SGDClassifier
    from sklearn.svm import LinearSVC
    if name == "ridgecv":
        return RidgeClassifierCV(alphas=RIDGE_ALPHAS)
    if name == "ridge":
        return RidgeClassifier(alpha=1.0)
    if name == "linsvc-sq":
        return LinearSVC(C=C, loss="squared_hinge", dual=False, max_iter=1000)
    if name == "linsvc-sq-cv":
        from sklearn.model_selection import GridSearchCV
        return GridSearchCV(LinearSVC(loss="squared_hinge", dual=False, max_iter=1000),
                            {"C": list(LINSVC_C_GRID)}, cv=3)
    if name == "linsvc-hinge":
        return LinearSVC(C=C, loss="hinge", dual=True, max_iter=1000)
    if name == "sgd":
        return SGDClassifier(loss="hinge", alpha=1.0 / (C * n), max_iter=50, tol=1e-4,
                             random_state=0)
    if name in ("streaming-ridge", "streaming-ridge-w0"):
        from rntk_numba.linear import StreamingRidgeClassifier
        return StreamingRidgeClassifier()
    raise ValueError(name)


LEARNER_LABEL = {
    "linsvc-sq": "LinearSVC, squared hinge, primal (dual=False), C as the SVC",
    "linsvc-sq-cv": "LinearSVC, squared hinge, primal, C in {0.1 .. 1000} by 3-fold "
                    "training CV",
    "linsvc-hinge": "LinearSVC, hinge, dual (liblinear), C as the SVC, max_iter 1000",
    "ridge": "RidgeClassifier(alpha=1)",
    "ridgecv": "RidgeClassifierCV(alphas 1e-6..10, efficient LOO)",
    "sgd": "SGDClassifier(hinge, alpha = 1/(C N), <= 50 epochs)",
    "streaming-ridge": "StreamingRidgeClassifier() (default alphas, LOO)",
    "streaming-ridge-w0": "StreamingRidgeClassifier() (default alphas, LOO), the "
                          "landmark rows weighted 0 (README)",
}


def fit_learner(name, C, F, y, landmark_rows=None):
    """Fit learner ``name`` on features F; ``landmark_rows`` (the training rows that
    are landmarks) get weight 0 for ``streaming-ridge-w0``."""
    est = learner(name, C, F.shape[0])
    kw = {}
    if name == "streaming-ridge-w0":
        if landmark_rows is None:
            raise ValueError("streaming-ridge-w0 needs the landmark rows")
        kw["sample_weight"] = np.ones(F.shape[0])
        kw["sample_weight"][landmark_rows] = 0.0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(F, y, **kw)
        t = time.perf_counter() - t0
    conv = sum("converge" in str(x.message).lower() for x in w)
    return est, t, conv


def nys(params, m, method, seed, n_jobs, **kw):
    p = {k: v for k, v in params.items() if k != "C"}
    return RNTKNystroem(sigma_w=p.get("sigma_w", SQRT2), sigma_b=p.get("sigma_b", 0.0),
                        sigma_h=p.get("sigma_h", 0.0), readout=p.get("readout", "mean"),
                        n_components=m, landmarks=method, random_state=seed,
                        kernel_scaling="cosine", n_jobs=n_jobs, **kw)


def spectral_norm(A):
    if A.shape[0] <= 1200:
        return float(np.max(np.abs(np.linalg.eigvalsh(A))))
    from scipy.sparse.linalg import eigsh
    return float(abs(eigsh(A, k=1, which="LM", return_eigenvectors=False,
                           tol=1e-6)[0]))


def project(tf, K):
    """The transformer's projection ``K @ K_mm^(-1/2)`` alone (its private helper)."""
    from rntk_numba import nystroem
    if hasattr(nystroem, "_project"):
        return nystroem._project(K, tf.normalization_)
    return tf._project(K)


def m_values(n_train, grid):
    target = min(TARGET_M, n_train // 2)
    ms = sorted(set([m for m in grid if m < n_train] + [target]))
    return [m for m in ms if m >= 1], target


# --------------------------------------------------------------------------- fidelity
def stage_fidelity(args, info):
    names = args.datasets
    seeds = args.seeds
    methods = args.landmarks
    b_learners = args.fidelity_learners
    rows_out, exact_rows = [], []
    for name in names:
        Ptr, ytr, Pte, yte = load_set(name, args)
        if name == "FordA":
            params = choose_forda_kernel(Ptr, ytr, args)
        else:
            params = dict(FIXED.get(name, dict(sigma_w=SQRT2, sigma_b=0.0, C=1.0)),
                          readout="mean")
        kernel = kernel_of(params)
        ex = None
        if "C" not in params:
            t0 = time.perf_counter()
            G, root = cosine_gram(Ptr, kernel, args.n_jobs)
            C, cv = choose_C(G, ytr, FORDA_C_GRID)
            params["C"] = C
            log(f"{name}: C = {C:g} by 5-fold training CV {dict(zip(FORDA_C_GRID, cv))} "
                f"({time.perf_counter() - t0:.1f} s)")
        C = params["C"]
        ex = exact_pipeline(Ptr, ytr, Pte, yte, kernel, C, args.n_jobs)
        G, root, Kte = ex.pop("G"), ex.pop("root"), ex.pop("Kte")
        Kc = G.copy()
        if params.get("sigma_h", 0.0) > 0:
            np.fill_diagonal(Kc, cross_form_diag(Ptr, root, kernel, args.n_jobs))
        K_fro = float(np.linalg.norm(Kc))
        K_spec = spectral_norm(Kc)
        ms, target = m_values(Ptr.n, args.m)
        opt = rank_m_optimum(Kc, Kte, ytr, yte, C, ms)
        del Kte
        log(f"{name}: rank-m optimum (Eckart-Young) "
            + ", ".join(f"m {m}: {a:.2f} %" for m, a in opt.items()))
        lens = np.concatenate([Ptr.lengths, Pte.lengths])
        exact_rows.append({"dataset": name, "n_train": Ptr.n, "n_test": Pte.n,
                           "length": f"{lens.min()}-{lens.max()}" if lens.min() != lens.max()
                           else str(lens.min()),
                           "classes": len(np.unique(ytr)),
                           "params": json.dumps(params),
                           "target_m": target, "acc_exact": ex["acc"],
                           "exact_fit_s": ex["fit_s"], "exact_predict_s": ex["predict_s"]})
        log(f"{name}: {Ptr.n} train / {Pte.n} test; exact SVC {ex['acc']:.2f} % "
            f"(fit {ex['fit_s']:.2f} s, predict {ex['predict_s']:.2f} s); m {ms}")
        for method in methods:
            for seed in seeds:
                for m in ms:
                    r = fidelity_point(name, Ptr, ytr, Pte, yte, params, m, method, seed,
                                       Kc, K_fro, K_spec, b_learners, args)
                    r.update({"target": m == target, "acc_exact": ex["acc"],
                              "acc_opt": opt[m],
                              "exact_fit_s": ex["fit_s"],
                              "exact_predict_s": ex["predict_s"]})
                    rows_out.append(r)
                    write_csv(rows_out, list(r), Path(args.out) / "fidelity_partial.csv")
                    log(f"  {method:10s} seed {seed} m {m:5d}: (a) {r['acc_a']:.2f} "
                        f"(optimum {opt[m]:.2f}) "
                        f"(a+diag) {r['acc_a_diag']:.2f} captured {r['diag_captured']:.3f} "
                        + " ".join(f"{b} {r['acc_' + b]:.2f}" for b in b_learners)
                        + f" | fro {r['rel_fro']:.3g} spec {r['rel_spec']:.3g} | fit "
                        f"{r['nys_fit_s']:.2f} s")
        write_fidelity(args, info, exact_rows, rows_out, b_learners, partial=True)
        del G, Kc
        gc.collect()
    return write_fidelity(args, info, exact_rows, rows_out, b_learners)


def parse_kernels(text):
    """``"1.34:0,sqrt2:2"`` -> [(1.34, 0.0), (1.4142..., 2.0)] (sigma_w:sigma_b pairs)."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        sw, sb = (v.strip() for v in item.split(":"))
        out.append((SQRT2 if sw == "sqrt2" else float(sw), float(sb)))
    return out


#: (sigma_w, sigma_b, C, CV accuracy) of every FordA kernel tried, for the Markdown.
FORDA_CV: list = []


def choose_forda_kernel(Ptr, ytr, args):
    """FordA's kernel and C by 5-fold training CV of the exact SVC, jointly over
    ``args.forda_kernels`` x FORDA_C_GRID: the protocol the UCR sets' settings came from.
    Ties go to the earlier kernel and the smaller C."""
    best = None
    for sw, sb in args.forda_kernels:
        params = dict(sigma_w=sw, sigma_b=sb, readout="mean")
        t0 = time.perf_counter()
        G, _ = cosine_gram(Ptr, kernel_of(params), args.n_jobs)
        C, cv = choose_C(G, ytr, FORDA_C_GRID)
        off = G[~np.eye(G.shape[0], dtype=bool)]
        FORDA_CV.append((sw, sb, C, max(cv), float(off.mean()), float(off.std())))
        log(f"FordA: sigma_w {sw:.4g} sigma_b {sb:g}: 5-fold training CV "
            f"{dict(zip(FORDA_C_GRID, np.round(cv, 4)))}; off-diagonal {off.mean():.3f} "
            f"+- {off.std():.3f} ({time.perf_counter() - t0:.1f} s)")
        if best is None or max(cv) > best[0]:
            best = (max(cv), dict(params, C=C))
        del G, off
        gc.collect()
    return best[1]


def rank_m_optimum(Kc, Kte, ytr, yte, C, ms):
    """Test accuracy of the same SVC on the best rank-m approximation of the training
    Gram (its top-m eigenpairs: by Eckart-Young no rank-m matrix, Nystrom or not, has a
    smaller Frobenius or spectral error), a test series mapped onto the same eigenvectors
    (``Kte U_m U_m^T``, the kernel-PCA map). A bound for comparison, not a method at
    scale: it needs the whole N x N Gram and N kernel entries per test series."""
    w, U = np.linalg.eigh(Kc)
    w, U = w[::-1], U[:, ::-1]
    out = {}
    for m in ms:
        keep = np.arange(min(m, len(w)))
        keep = keep[w[keep] > 1e-12 * w[0]]
        Um = U[:, keep]
        Ka = (Um * w[keep]) @ Um.T
        Kt = (Kte @ Um) @ Um.T
        model = svc(C).fit(Ka, ytr)
        out[m] = 100 * float(np.mean(model.predict(Kt) == yte))
    return out


def fidelity_point(name, Ptr, ytr, Pte, yte, params, m, method, seed, Kc, K_fro, K_spec,
                   b_learners, args):
    C = params["C"]
    t0 = time.perf_counter()
    tf = nys(params, m, method, seed, args.n_jobs).fit(Ptr)
    t1 = time.perf_counter()
    Ftr = tf.transform(Ptr)
    t2 = time.perf_counter()
    Fte = tf.transform(Pte)
    t3 = time.perf_counter()
    Ka = Ftr @ Ftr.T
    E = Kc - Ka
    rel_fro = float(np.linalg.norm(E)) / K_fro
    rel_spec = spectral_norm(E) / K_spec
    del E
    ta = time.perf_counter()
    ma = svc(C).fit(Ka, ytr)
    Kte_a = Fte @ Ftr.T
    acc_a = 100 * float(np.mean(ma.predict(Kte_a) == yte))
    ta = time.perf_counter() - ta
    # diagnostics: the share of each training series' self-kernel that the features
    # capture (landmarks excluded: theirs is exact), and (a) with the exact diagonal put
    # back (K_nys + diag(k(x, x) - |phi(x)|^2): the Nystrom residual's diagonal, which
    # acts as a ridge term in the exact SVC)
    sq = np.einsum("ij,ij->i", Ftr, Ftr)
    kd = np.diag(Kc)
    off = np.ones(Ptr.n, bool)
    off[tf.landmark_indices_] = False
    captured = float(np.mean(sq[off] / kd[off])) if off.any() else 1.0
    Ka[np.diag_indices_from(Ka)] = kd
    md = svc(C).fit(Ka, ytr)
    acc_a_diag = 100 * float(np.mean(md.predict(Kte_a) == yte))
    del Ka, Kte_a
    r = {"dataset": name, "landmarks": method, "seed": seed, "m": m, "n_train": Ptr.n,
         "acc_a": acc_a, "acc_a_diag": acc_a_diag, "diag_captured": captured,
         "rel_fro": rel_fro, "rel_spec": rel_spec,
         "landmark_s": tf.fit_time_["landmarks"], "landmark_gram_s":
         tf.fit_time_["landmark_gram"], "transform_train_s": t2 - t1,
         "transform_test_s": t3 - t2, "svc_a_s": ta,
         "nys_fit_s": t2 - t0, "nys_predict_s": t3 - t2}
    for b in b_learners:
        est, tb, conv = fit_learner(b, C, Ftr, ytr, tf.landmark_indices_)
        t4 = time.perf_counter()
        pred = est.predict(Fte)
        tp = time.perf_counter() - t4
        r["acc_" + b] = 100 * float(np.mean(pred == yte))
        r["fit_" + b + "_s"] = tb
        r["pipe_fit_" + b + "_s"] = (t2 - t0) + tb
        r["pipe_predict_" + b + "_s"] = (t3 - t2) + tp
    return r


def write_fidelity(args, info, exact_rows, rows_out, b_learners, partial=False):
    out = Path(args.out)
    cols = ["dataset", "landmarks", "seed", "m", "n_train", "target", "acc_exact",
            "acc_opt", "acc_a", "acc_a_diag"] + [f"acc_{b}" for b in b_learners] + [
        "diag_captured", "rel_fro", "rel_spec", "landmark_s", "landmark_gram_s", "transform_train_s",
        "transform_test_s", "svc_a_s", "nys_fit_s", "nys_predict_s"] + \
        [f"fit_{b}_s" for b in b_learners] + \
        [f"pipe_fit_{b}_s" for b in b_learners] + \
        [f"pipe_predict_{b}_s" for b in b_learners] + ["exact_fit_s", "exact_predict_s"]
    write_csv(rows_out, cols, out / "fidelity.csv")
    write_csv(exact_rows, list(exact_rows[0]) if exact_rows else ["dataset"],
              out / "fidelity_exact.csv")
    if partial:
        return None
    (out / "fidelity_partial.csv").unlink(missing_ok=True)
    md = fidelity_markdown(args, info, exact_rows, rows_out, b_learners)
    (out / "fidelity.md").write_text(md)
    if not args.no_plot:
        try:
            fidelity_plot(out / "fidelity.png", exact_rows, rows_out, b_learners)
        except Exception as exc:  # plotting is optional
            log(f"plot skipped: {exc}")
    return md


def _mean(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def _agg(rows_out, **match):
    return [r for r in rows_out if all(r[k] == v for k, v in match.items())]


def fidelity_markdown(args, info, exact_rows, rows_out, b_learners):
    b0 = b_learners[0] if b_learners else None
    L = ["## Fidelity", "", f"Command: `{args.command}`", "", machine_line(info), "",
         "Per set: exact RNTK SVC (cosine precomputed Gram, fixed kernel and C) against "
         "(a) the same SVC on Phi Phi^T and (b) linear learners on Phi; accuracies are "
         f"means over seeds {args.seeds}; errors relative to the exact cross-form cosine "
         "training Gram (Frobenius; spectral = largest |eigenvalue|). Target m = "
         "min(2048, N_train // 2). \"rank-m optimum\": the same SVC on the best rank-m "
         "approximation of the exact training Gram (its top m eigenpairs, Eckart-Young; "
         "test series through the same eigenvectors) -- what no rank-m feature map can "
         "beat in kernel error; a bound, not a method at scale.", ""]
    if FORDA_CV:
        L += ["FordA's kernel and C by 5-fold training CV of the exact SVC (C over "
              f"{list(FORDA_C_GRID)}):", "",
              "| sigma_w | sigma_b | best C | CV accuracy | off-diagonal mean +- sd |",
              "|---|---|---|---|---|"]
        L += [f"| {sw:.4g} | {sb:g} | {C:g} | {100 * cv:.2f} | {om:.3f} +- {osd:.3f} |"
              for sw, sb, C, cv, om, osd in FORDA_CV]
        L.append("")
    # per-set table at the target m
    head = ["data set", "train / test", "params", "m", "exact", "rank-m optimum",
            "(a) rpc", "(a) unif",
            "(a)+diag rpc", "diag captured rpc"] + \
        [f"(b) {b} rpc" for b in b_learners] + \
        ["fro rpc", "fro unif", "spec rpc", "spec unif", "exact fit+pred s",
         f"Nys fit+pred s ({b0}, rpc)"]
    L += ["### At the target m", "", "| " + " | ".join(head) + " |",
          "|" + "---|" * len(head)]
    summ = {"acc_exact": [], "opt": [], "a_rpc": [], "a_unif": [], "a_diag": [], **{b: [] for b in b_learners},
            "fro_rpc": [], "fro_unif": [], "spec_rpc": [], "spec_unif": []}
    worst = (None, -1e9)
    for e in exact_rows:
        n, t = e["dataset"], e["target_m"]
        rp = _agg(rows_out, dataset=n, m=t, landmarks="rpcholesky")
        un = _agg(rows_out, dataset=n, m=t, landmarks="uniform")
        a_r = _mean([r["acc_a"] for r in rp])
        a_u = _mean([r["acc_a"] for r in un])
        a_o = _mean([r.get("acc_opt") for r in rp + un])
        summ["opt"].append(a_o)
        a_d = _mean([r["acc_a_diag"] for r in rp])
        cap = _mean([r["diag_captured"] for r in rp])
        summ["a_diag"].append(a_d)
        bs = {b: _mean([r["acc_" + b] for r in rp]) for b in b_learners}
        f_r, f_u = _mean([r["rel_fro"] for r in rp]), _mean([r["rel_fro"] for r in un])
        s_r, s_u = _mean([r["rel_spec"] for r in rp]), _mean([r["rel_spec"] for r in un])
        tf = _mean([r.get(f"pipe_fit_{b0}_s", float("nan")) +
                    r.get(f"pipe_predict_{b0}_s", float("nan")) for r in rp]) if b0 else \
            float("nan")
        summ["acc_exact"].append(e["acc_exact"])
        summ["a_rpc"].append(a_r)
        summ["a_unif"].append(a_u)
        for b in b_learners:
            summ[b].append(bs[b])
        summ["fro_rpc"].append(f_r)
        summ["fro_unif"].append(f_u)
        summ["spec_rpc"].append(s_r)
        summ["spec_unif"].append(s_u)
        if not math.isnan(a_r) and e["acc_exact"] - a_r > worst[1]:
            worst = (n, e["acc_exact"] - a_r)
        p = json.loads(e["params"])
        ps = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in p.items() if k not in ("readout",))
        L.append("| " + " | ".join(
            [n, f"{e['n_train']} / {e['n_test']}", ps, str(t), f"{e['acc_exact']:.2f}",
             f"{a_o:.2f}", f"{a_r:.2f}", f"{a_u:.2f}", f"{a_d:.2f}", f"{cap:.3f}"] +
            [f"{bs[b]:.2f}" for b in b_learners] +
            [f"{f_r:.3f}", f"{f_u:.3f}", f"{s_r:.3f}", f"{s_u:.3f}",
             f"{e['exact_fit_s'] + e['exact_predict_s']:.2f}", f"{tf:.2f}"]) + " |")
    L.append("| **mean** | | | | " + " | ".join(
        [f"{_mean(summ['acc_exact']):.2f}", f"{_mean(summ['opt']):.2f}",
         f"{_mean(summ['a_rpc']):.2f}",
         f"{_mean(summ['a_unif']):.2f}", f"{_mean(summ['a_diag']):.2f}", ""] +
        [f"{_mean(summ[b]):.2f}" for b in b_learners] +
        [f"{_mean(summ['fro_rpc']):.3f}", f"{_mean(summ['fro_unif']):.3f}",
         f"{_mean(summ['spec_rpc']):.3f}", f"{_mean(summ['spec_unif']):.3f}", "", ""])
        + " |")
    L.append("")
    d_a = _mean(summ["acc_exact"]) - _mean(summ["a_rpc"])
    d_o = _mean(summ["acc_exact"]) - _mean(summ["opt"])
    worst_o = max(((e["dataset"], e["acc_exact"] - o) for e, o in
                   zip(exact_rows, summ["opt"]) if not math.isnan(o)),
                  key=lambda t: t[1], default=(None, float("nan")))
    L.append(f"Targets at the target m (rpcholesky): mean (a) is {d_a:+.2f} points below "
             f"the exact SVC (target <= 1); worst set {worst[0]} {worst[1]:+.2f} "
             f"(target <= 2). The rank-m optimum: {d_o:+.2f} below on average, worst "
             f"set {worst_o[0]} {worst_o[1]:+.2f}.")
    for b in b_learners:
        L.append(f"  (b) {b}: {_mean(summ['a_rpc']) - _mean(summ[b]):+.2f} points below "
                 f"(a) (target <= 1).")
    L.append("")
    # per-set accuracy against m
    L += ["### Accuracy and kernel error against m (means over seeds)", "",
          "| data set | m | exact | rank-m optimum | (a) rpc | (a) unif | (a)+diag rpc | "
          "captured rpc | " +
          " | ".join(f"(b) {b} rpc" for b in b_learners) +
          " | fro rpc | fro unif | spec rpc | spec unif | Nys fit s (rpc) | "
          "transform test s (rpc) |",
          "|" + "---|" * (14 + len(b_learners))]
    for e in exact_rows:
        n = e["dataset"]
        for m in sorted({r["m"] for r in rows_out if r["dataset"] == n}):
            rp = _agg(rows_out, dataset=n, m=m, landmarks="rpcholesky")
            un = _agg(rows_out, dataset=n, m=m, landmarks="uniform")
            L.append("| " + " | ".join(
                [n, str(m), f"{e['acc_exact']:.2f}",
                 f"{_mean([r.get('acc_opt') for r in rp + un]):.2f}",
                 f"{_mean([r['acc_a'] for r in rp]):.2f}",
                 f"{_mean([r['acc_a'] for r in un]):.2f}",
                 f"{_mean([r['acc_a_diag'] for r in rp]):.2f}",
                 f"{_mean([r['diag_captured'] for r in rp]):.3f}"] +
                [f"{_mean([r['acc_' + b] for r in rp]):.2f}" for b in b_learners] +
                [f"{_mean([r['rel_fro'] for r in rp]):.3f}",
                 f"{_mean([r['rel_fro'] for r in un]):.3f}",
                 f"{_mean([r['rel_spec'] for r in rp]):.3f}",
                 f"{_mean([r['rel_spec'] for r in un]):.3f}",
                 f"{_mean([r['nys_fit_s'] for r in rp]):.2f}",
                 f"{_mean([r['nys_predict_s'] for r in rp]):.2f}"]) + " |")
    L.append("")
    # rpcholesky vs uniform, pairwise over (set, m)
    wins_e = wins_a = ties_a = n_pairs = 0
    for e in exact_rows:
        for m in sorted({r["m"] for r in rows_out if r["dataset"] == e["dataset"]}):
            rp = _agg(rows_out, dataset=e["dataset"], m=m, landmarks="rpcholesky")
            un = _agg(rows_out, dataset=e["dataset"], m=m, landmarks="uniform")
            if not rp or not un:
                continue
            n_pairs += 1
            wins_e += _mean([r["rel_fro"] for r in rp]) < _mean([r["rel_fro"] for r in un])
            da = _mean([r["acc_a"] for r in rp]) - _mean([r["acc_a"] for r in un])
            wins_a += da > 0
            ties_a += da == 0
    if n_pairs:
        L.append(f"rpcholesky against uniform over {n_pairs} (set, m) pairs: lower "
                 f"Frobenius error in {wins_e}; higher (a) accuracy in {wins_a}, equal in "
                 f"{ties_a}, lower in {n_pairs - wins_a - ties_a}.")
        L.append("")
    return "\n".join(L)


def fidelity_plot(path, exact_rows, rows_out, b_learners):
    plt = pyplot()
    sets = [e["dataset"] for e in exact_rows]
    big = [s for s in sets if max(r["m"] for r in rows_out if r["dataset"] == s) >= 128]
    if not big:
        big = sets
    k = len(big)
    ncol = min(4, k)
    nrow = int(math.ceil(k / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, s in zip(axes.flat, big):
        e = next(x for x in exact_rows if x["dataset"] == s)
        ms = sorted({r["m"] for r in rows_out if r["dataset"] == s})
        for method, style in (("rpcholesky", "-o"), ("uniform", "--s")):
            ax.plot(ms, [_mean([r["acc_a"] for r in _agg(rows_out, dataset=s, m=m,
                                                          landmarks=method)]) for m in ms],
                    style, ms=3, label=f"(a) {method}")
        for b in b_learners:
            ax.plot(ms, [_mean([r["acc_" + b] for r in _agg(rows_out, dataset=s, m=m,
                                                              landmarks="rpcholesky")])
                         for m in ms], ":^", ms=3, label=f"(b) {b}")
        ax.axhline(e["acc_exact"], color="k", lw=0.8, label="exact SVC")
        ax.set_xscale("log", base=2)
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("m")
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- learners
def stage_learners(args, info):
    names = args.learner_datasets
    names_l = list(args.learners)
    out_rows = []
    for name in names:
        Ptr, ytr, Pte, yte = load_set(name, args)
        params = dict(FIXED.get(name, args.forda_kernel), readout="mean")
        params.setdefault("C", args.forda_C)
        _, target = m_values(Ptr.n, args.m)
        tf = nys(params, target, "rpcholesky", 0, args.n_jobs).fit(Ptr)
        Ftr, Fte = tf.transform(Ptr), tf.transform(Pte)
        for b in names_l:
            est, t, conv = fit_learner(b, params["C"], Ftr, ytr, tf.landmark_indices_)
            t0 = time.perf_counter()
            acc = 100 * float(np.mean(est.predict(Fte) == yte))
            tp = time.perf_counter() - t0
            alpha = getattr(est, "alpha_", "")
            if hasattr(est, "best_params_"):
                alpha = est.best_params_["C"]
            out_rows.append({"dataset": name, "n_train": Ptr.n, "m": target,
                             "learner": b, "acc": acc, "fit_s": t, "predict_s": tp,
                             "convergence_warnings": conv,
                             "alpha_or_C": float(alpha) if alpha != "" else ""})
            log(f"{name} m={target} {b:16s} {acc:6.2f} % fit {t:.3f} s"
                + (f" ({conv} convergence warning(s))" if conv else ""))
    cols = ["dataset", "n_train", "m", "learner", "acc", "fit_s", "predict_s",
            "convergence_warnings", "alpha_or_C"]
    write_csv(out_rows, cols, Path(args.out) / "learners.csv")
    L = ["## Linear learners on the Nyström features", "", f"Command: `{args.command}`",
         "", machine_line(info), "",
         "rpcholesky landmarks (seed 0) at the target m = min(2048, N_train // 2); C of "
         "the SVC-type learners is the set's fixed C (FordA: from the exact SVC's "
         f"training CV, {args.forda_C:g} unless that stage ran first). Fit time of the "
         "learner alone (features precomputed); single runs.", "",
         "| data set | N train | m | " + " | ".join(names_l) + " |",
         "|" + "---|" * (3 + len(names_l))]
    for name in names:
        rr = {r["learner"]: r for r in out_rows if r["dataset"] == name}
        any_r = next(iter(rr.values()))
        cells = []
        for b in names_l:
            r = rr[b]
            w = "*" if r["convergence_warnings"] else ""
            cells.append(f"{r['acc']:.2f} % / {r['fit_s']:.2f} s{w}")
        L.append(f"| {name} | {any_r['n_train']} | {any_r['m']} | " + " | ".join(cells)
                 + " |")
    L += ["", "Cells: test accuracy / fit seconds; * = ConvergenceWarning. Learners: " +
          "; ".join(f"{b}: {LEARNER_LABEL[b]}" for b in names_l) + ".", ""]
    md = "\n".join(L)
    (Path(args.out) / "learners.md").write_text(md)
    return md


# --------------------------------------------------------------------------- crossover
def nys_pipeline(Ptr, ytr, Pte, yte, params, m, b, n_jobs, C=None):
    t0 = time.perf_counter()
    tf = nys(params, m, "rpcholesky", 0, n_jobs)
    F = tf.fit_transform(Ptr)
    est, _, _ = fit_learner(b, params["C"] if C is None else C, F, ytr,
                            tf.landmark_indices_)
    t1 = time.perf_counter()
    acc = 100 * float(np.mean(est.predict(tf.transform(Pte)) == yte))
    t2 = time.perf_counter()
    return acc, t1 - t0, t2 - t1


def stage_crossover(args, info):
    b = args.recommended
    out_rows = []
    sources = []
    if "FordA" in args.crossover_sources:
        Ptr, ytr, Pte, yte = load_set("FordA", args)
        params = dict(args.forda_kernel, readout="mean", C=args.forda_C)
        sources.append(("FordA", Ptr, ytr, Pte, yte, params,
                        [n for n in args.crossover_n if n <= Ptr.n]))
    if "synthetic" in args.crossover_sources:
        nmax = max(args.crossover_synth_n)
        Ps, ys = synthetic(nmax + args.crossover_test, seed=11, n_classes=args.scale_classes)
        Pte = rows(Ps, np.arange(nmax, nmax + args.crossover_test))
        yte = ys[nmax:]
        (sw, sb), = parse_kernels(args.synth_kernel)
        params = dict(sigma_w=sw, sigma_b=sb, readout=args.scale_readout, C=args.synth_C)
        sources.append(("synthetic", rows(Ps, np.arange(nmax)), ys[:nmax], Pte, yte,
                        params, list(args.crossover_synth_n)))
    for src, Ptr, ytr, Pte, yte, params, ns in sources:
        kernel = kernel_of(params)
        rng = np.random.default_rng(0)
        perm = rng.permutation(Ptr.n)
        for n in ns:
            idx = np.sort(perm[:n])
            P, y = rows(Ptr, idx), ytr[idx]
            ex = exact_pipeline(P, y, Pte, yte, kernel, params["C"], args.n_jobs)
            del ex["G"], ex["root"], ex["Kte"]
            best = best_any = None
            for m in [m for m in args.m if m < n]:
                acc, tfit, tpred = nys_pipeline(P, y, Pte, yte, params, m, b, args.n_jobs,
                                                C=args.nys_C)
                log(f"crossover {src} N={n} m={m}: Nys {acc:.2f} % ({tfit + tpred:.2f} s) "
                    f"vs exact {ex['acc']:.2f} % ({ex['fit_s'] + ex['predict_s']:.2f} s)")
                if acc >= ex["acc"] - 1.0:
                    best = (m, acc, tfit, tpred)
                    break
                best_any = (m, acc, tfit, tpred)
            reached = best is not None
            if best is None:
                best = best_any
            if best is None:
                continue
            t_ex = ex["fit_s"] + ex["predict_s"]
            t_ny = best[2] + best[3]
            out_rows.append({"source": src, "kernel": (
                                 f"sigma_w={params['sigma_w']:.4g}, sigma_b="
                                 f"{params['sigma_b']:g}, {params['readout']}, "
                                 f"C={params['C']:g}"), "n_train": n, "n_test": Pte.n,
                             "acc_exact": ex["acc"], "exact_fit_s": ex["fit_s"],
                             "exact_predict_s": ex["predict_s"], "m": best[0],
                             "within_1pt": reached, "acc_nys": best[1],
                             "nys_fit_s": best[2], "nys_predict_s": best[3],
                             "speedup": t_ex / t_ny})
    cols = ["source", "kernel", "n_train", "n_test", "acc_exact", "exact_fit_s",
            "exact_predict_s",
            "m", "within_1pt", "acc_nys", "nys_fit_s", "nys_predict_s", "speedup"]
    write_csv(out_rows, cols, Path(args.out) / "crossover.csv")
    L = ["## Crossover: from which N is the Nyström pipeline faster at equal accuracy",
         "", f"Command: `{args.command}`", "", machine_line(info), "",
         f"Exact: cosine RNTK-mean Gram + SVC (fit), cross Gram + predict. Nyström: "
         f"rpcholesky (seed 0), {b} (C = "
         f"{'the exact SVC' + chr(39) + 's' if args.nys_C is None else args.nys_C}), "
         f"the smallest m of {list(args.m)} whose test accuracy "
         f"is within 1 point of the exact SVC's (picked on the test set: a cost "
         f"measurement), fit_transform + learner, predict = transform + predict. Same "
         f"test set for every N. Single runs.", "",
         "| data | kernel | N train | exact acc | exact fit + predict s | m | Nys acc | "
         "Nys fit + predict s | exact / Nys time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in out_rows:
        L.append(f"| {r['source']} | {r['kernel']} | {r['n_train']} | {r['acc_exact']:.2f} | "
                 f"{r['exact_fit_s']:.2f} + {r['exact_predict_s']:.2f} | {r['m']}"
                 f"{'' if r['within_1pt'] else ' (not within 1 pt)'} | "
                 f"{r['acc_nys']:.2f} | {r['nys_fit_s']:.2f} + {r['nys_predict_s']:.2f} | "
                 f"{r['speedup']:.2f}x |")
    L.append("")
    md = "\n".join(L)
    (Path(args.out) / "crossover.md").write_text(md)
    return md


# --------------------------------------------------------------------------- scale
def stage_scale(args, info):
    out = Path(args.out)
    N, Nt, m = args.scale_n, args.scale_test, args.scale_m
    params = dict(sigma_w=SQRT2, sigma_b=0.0, readout=args.scale_readout)
    kernel = kernel_of(params)
    stages, res = [], {}
    rss0, anon0 = rss(), _status("RssAnon")

    def stage(name, fn):
        gc.collect()
        reset_peak()
        before = rss()
        with AnonPeak() as ap:
            t0 = time.perf_counter()
            value = fn()
            t = time.perf_counter() - t0
        row = {"stage": name, "wall_s": t, "rss_before_gb": before / 2**30,
               "peak_rss_gb": peak() / 2**30, "peak_anon_gb": ap.max / 2**30,
               "rss_after_gb": rss() / 2**30, "load1": os.getloadavg()[0]}
        stages.append(row)
        log(f"scale {name}: {t:.1f} s, peak RSS {row['peak_rss_gb']:.2f} GB "
            f"(anon {row['peak_anon_gb']:.2f}), RSS after {row['rss_after_gb']:.2f} GB")
        return value

    data = list(stage("generate", lambda: synthetic(N + Nt, seed=args.scale_seed,
                                                    n_classes=args.scale_classes,
                                                    as_list=True)))
    y_all = data[1]
    P_all = stage("pack", lambda: pack(data.pop(0)))      # the list is freed after
    gc.collect()
    Ptr = PackedSequences(P_all.values[:P_all.offsets[N]], P_all.offsets[:N + 1],
                          P_all.lengths[:N])
    o = int(P_all.offsets[N])
    Pte = PackedSequences(P_all.values[o:], P_all.offsets[N:] - o, P_all.lengths[N:])
    ytr, yte = y_all[:N], y_all[N:]
    input_gb = (P_all.values.nbytes + P_all.offsets.nbytes + P_all.lengths.nbytes) / 2**30
    tf = nys(params, m, "rpcholesky", args.scale_seed, args.n_jobs,
             dtype="float32", progress=args.progress)
    stage("fit", lambda: tf.fit(Ptr))
    L_len = tf.landmarks_.lengths
    # engine rate on the same shapes, right before the transform
    sub = np.sort(np.random.default_rng(1).choice(N, size=min(args.rate_subset, N),
                                                  replace=False))
    Psub = rows(Ptr, sub)
    steps_sub = pair_steps(Psub.lengths, L_len, kernel.n_layers)
    _ = gram(rows(Psub, np.arange(min(64, Psub.n))), tf.landmarks_, kernel=kernel,
             n_jobs=args.n_jobs)                                     # warm-up
    t_grams, t_tsubs = [], []
    for _r in range(args.rate_rounds):          # alternate, so that load drifts pair up
        t0 = time.perf_counter()
        _ = gram(Psub, tf.landmarks_, kernel=kernel, n_jobs=args.n_jobs)
        t_grams.append(time.perf_counter() - t0)
        del _
        t0 = time.perf_counter()
        tf.transform(Psub)
        t_tsubs.append(time.perf_counter() - t0)
    t_gram, t_tsub = float(np.median(t_grams)), float(np.median(t_tsubs))
    paired = float(np.median(np.array(t_grams) / np.array(t_tsubs)))
    # projection alone, on a chunk-shaped block
    Kblk = np.random.default_rng(2).random((tf._chunk_rows(), m))
    t0 = time.perf_counter()
    project(tf, Kblk)
    t_proj = (time.perf_counter() - t0) / Kblk.shape[0]
    del Kblk
    res.update({"rate_subset": Psub.n, "gram_sub_s": t_gram,
                "gram_rate": steps_sub / t_gram, "transform_sub_s": t_tsub,
                "transform_sub_rate": steps_sub / t_tsub, "gram_sub_all_s": t_grams,
                "transform_sub_all_s": t_tsubs, "paired_ratio": paired,
                "projection_s_per_row": t_proj})
    log(f"scale: engine cross rate {steps_sub / t_gram / 1e6:.0f} M pair-steps/s on "
        f"{sub.size} x {m}; transform on the same {steps_sub / t_tsub / 1e6:.0f} M/s")
    feat_path = Path(args.scale_dir or out) / f"features_{N}_{m}.f32.npy"
    out_dir(feat_path.parent)
    F = np.lib.format.open_memmap(feat_path, mode="w+", dtype=np.float32, shape=(N, m))
    steps = pair_steps(Ptr.lengths, L_len, kernel.n_layers)
    stage("transform", lambda: tf.transform(Ptr, out=F))
    F.flush()
    t_tr = stages[-1]["wall_s"]
    # the engine's rate once more right after, to bracket load drifts during the run
    t0 = time.perf_counter()
    _ = gram(Psub, tf.landmarks_, kernel=kernel, n_jobs=args.n_jobs)
    t_after = time.perf_counter() - t0
    del _, Psub
    res.update({"transform_rate": steps / t_tr, "transform_steps": steps,
                "gram_rate_after": steps_sub / t_after})
    del F
    F = np.load(feat_path, mmap_mode="r")
    from rntk_numba.linear import StreamingRidgeClassifier
    clf = StreamingRidgeClassifier(progress=args.progress)
    clf_name = "StreamingRidgeClassifier"
    res["classifier"] = clf_name
    # the landmark rows (reproduced exactly, leverage ~1) are left out of the ridge
    # fit by a zero weight (README: Nyström features); --scale-keep-landmarks keeps them
    w = np.ones(N)
    if not args.scale_keep_landmarks:
        w[tf.landmark_indices_] = 0.0
        clf_name += " (landmark rows weighted 0)"
        res["classifier"] = clf_name
    stage("train", lambda: clf.fit(F, ytr, sample_weight=w))

    def _predict():
        Ft = tf.transform(Pte)
        return clf.predict(Ft)
    pred = stage("predict", _predict)
    acc = 100 * float(np.mean(pred == yte))
    # exact Gram at this N, extrapolated at the measured engine rate
    exact_steps = pair_steps(Ptr.lengths, None, kernel.n_layers)
    res.update({"N": N, "N_test": Nt, "m": m, "accuracy": acc, "input_gb": input_gb,
                "features_gb": N * m * 4 / 2**30, "rss_start_gb": rss0 / 2**30,
                "exact_steps": exact_steps,
                "exact_extrapolated_s": exact_steps / res["gram_rate"],
                "exact_bytes": 8.0 * N * N, "alpha": float(getattr(clf, "alpha_", "nan")),
                "fit_landmarks_s": tf.fit_time_["landmarks"],
                "fit_landmark_gram_s": tf.fit_time_["landmark_gram"]})
    if not args.keep_features:
        del F
        os.remove(feat_path)
    write_csv(stages, list(stages[0]), out / "scale_stages.csv")
    (out / "scale.json").write_text(json.dumps(res, indent=2, default=float))
    peak_beyond = max(s["peak_rss_gb"] for s in stages if s["stage"] not in
                      ("generate", "pack")) - input_gb - rss0 / 2**30
    peak_anon_beyond = max(s["peak_anon_gb"] for s in stages if s["stage"] not in
                           ("generate", "pack")) - input_gb - anon0 / 2**30
    L = ["## Scale", "", f"Command: `{args.command}`", "", machine_line(info), "",
         f"N = {N:,} training + {Nt:,} test ragged series (lengths uniform in [50, 350], "
         f"{args.scale_classes} classes, seed {args.scale_seed}), RNTK "
         f"readout={args.scale_readout}, m = {m}, rpcholesky, float32 features written "
         f"to an on-disk memmap ({res['features_gb']:.2f} GB), then "
         f"{clf_name} over the memmap. Input (packed float64 series): "
         f"{input_gb:.2f} GB. Peak RSS = VmHWM reset at each stage (includes the "
         f"memmap's resident file pages); anon = sampled RssAnon peak.", "",
         "| stage | wall s | peak RSS GB | peak anon GB | RSS after GB | load (1 min) |",
         "|---|---|---|---|---|---|"]
    for s in stages:
        L.append(f"| {s['stage']} | {s['wall_s']:.1f} | {s['peak_rss_gb']:.2f} | "
                 f"{s['peak_anon_gb']:.2f} | {s['rss_after_gb']:.2f} | {s['load1']:.2f} |")
    L += ["", f"Test accuracy {acc:.2f} % on {Nt:,} held-out series (ridge alpha "
          f"{res['alpha']:g}).", "",
          "| quantity | value |", "|---|---|",
          f"| transform rate (N x m) | {res['transform_rate'] / 1e6:.0f} M pair-steps/s |",
          f"| engine `gram(X_sub, landmarks)`, {res['rate_subset']:,} x {m}, just before "
          f"(median of {args.rate_rounds}) | {res['gram_rate'] / 1e6:.0f} M pair-steps/s "
          f"({res['gram_sub_s']:.1f} s) |",
          f"| engine, same subset, right after the transform | "
          f"{res['gram_rate_after'] / 1e6:.0f} M pair-steps/s |",
          f"| transform of the same subset | {res['transform_sub_rate'] / 1e6:.0f} M "
          f"pair-steps/s ({res['transform_sub_s']:.1f} s) |",
          f"| transform / engine rate | {res['transform_rate'] / res['gram_rate']:.1%} "
          f"(subset: median of {args.rate_rounds} paired ratios "
          f"{res['paired_ratio']:.1%}) |",
          f"| projection alone | {res['projection_s_per_row'] * N:.1f} s for N rows "
          f"({res['projection_s_per_row'] * 1e6:.1f} us / row) |",
          f"| peak RSS beyond input (fit..predict) | {peak_beyond:.2f} GB (anon "
          f"{peak_anon_beyond:.2f} GB) |",
          f"| train time / transform time | "
          f"{next(s['wall_s'] for s in stages if s['stage'] == 'train') / t_tr:.2f} |",
          f"| exact Gram at N: pair-steps | {exact_steps:.3g} |",
          f"| exact Gram at N: time at the engine rate (extrapolated) | "
          f"{res['exact_extrapolated_s']:.3g} s = {res['exact_extrapolated_s'] / 86400:.2f}"
          f" days |",
          f"| exact Gram at N: bytes (float64, N x N) | {res['exact_bytes'] / 1e12:.3g} TB |",
          ""]
    md = "\n".join(L)
    (out / "scale.md").write_text(md)
    return md


# --------------------------------------------------------------------------- peers
def stage_peers(args, info):
    out = Path(args.out)
    params = dict(sigma_w=SQRT2, sigma_b=0.0, readout=args.scale_readout, C=args.synth_C)
    kernel = kernel_of(params)
    rows_out = []
    L = ["## Peers", "", f"Command: `{args.command}`", "", machine_line(info), ""]
    # ---- scikit-learn Nystroem with a per-pair callable
    n_sub, m_sub = args.sk_n, args.sk_m
    P, _ = synthetic(n_sub, seed=21, n_classes=args.scale_classes)
    Tmax = int(P.lengths.max())
    X2 = np.zeros((P.n, Tmax + 1))
    X2[:, 0] = P.lengths
    for i in range(P.n):
        X2[i, 1:1 + P.lengths[i]] = P.series(i)[:, 0]
    calls = [0]

    def rntk_pair(a, b):
        calls[0] += 1
        x, z = a[1:1 + int(a[0])], b[1:1 + int(b[0])]
        return float(gram([x], [z], kernel=kernel, n_jobs=1)[0, 0])

    from sklearn.kernel_approximation import Nystroem
    rntk_pair(X2[0], X2[1])                                     # compile / warm up
    calls[0] = 0
    sk = Nystroem(kernel=rntk_pair, n_components=m_sub, random_state=0)
    t0 = time.perf_counter()
    sk.fit(X2)
    t_fit = time.perf_counter() - t0
    c_fit = calls[0]
    t0 = time.perf_counter()
    sk.transform(X2)
    t_tr = time.perf_counter() - t0
    c_tr = calls[0] - c_fit
    per_call = (t_fit + t_tr) / (c_fit + c_tr)
    ours = RNTKNystroem(sigma_w=SQRT2, readout=args.scale_readout, n_components=m_sub,
                        landmarks="uniform", random_state=0, kernel_scaling="none",
                        n_jobs=args.n_jobs)
    t0 = time.perf_counter()
    ours.fit(P)
    ours.transform(P)
    t_ours = time.perf_counter() - t0
    N1, m1 = args.scale_n, args.scale_m
    mean_min = pair_steps(P.lengths, P.lengths[:m_sub]) / (P.n * m_sub)
    extrap = per_call * (m1 * (m1 + 1) // 2 + N1 * m1)
    rows_out.append({"peer": "sklearn Nystroem(kernel=callable)", "n": n_sub, "m": m_sub,
                     "calls": c_fit + c_tr, "seconds": t_fit + t_tr,
                     "per_call_us": per_call * 1e6, "ours_seconds": t_ours,
                     "ratio": (t_fit + t_tr) / t_ours, "extrapolated_s": extrap,
                     "accuracy": "", "note": f"extrapolated to N={N1:,}, m={m1} "
                     f"(m (m + 1) / 2 + N m calls)"})
    log(f"sklearn Nystroem callable: {c_fit + c_tr} calls in {t_fit + t_tr:.2f} s "
        f"({per_call * 1e6:.0f} us/call); ours {t_ours:.3f} s; extrapolated "
        f"{extrap / 86400:.1f} days at N={N1}, m={m1}")
    L += ["### scikit-learn `Nystroem(kernel=callable)`", "",
          f"The callable computes one RNTK entry per call (`gram([x], [y])`, raw kernel); "
          f"ragged series are encoded as fixed-width rows `[T, x_1..x_T, 0...]` "
          f"(width {Tmax + 1}), because `Nystroem` validates a finite 2-D array (NaN "
          f"padding is rejected). N = {n_sub} synthetic series (mean min(T, T') "
          f"{mean_min:.0f}), m = {m_sub}: {c_fit + c_tr:,} calls in "
          f"{t_fit + t_tr:.2f} s = {per_call * 1e6:.0f} us per call; `RNTKNystroem` "
          f"(uniform landmarks, same m, raw kernel) on the same data: {t_ours:.3f} s, "
          f"**{(t_fit + t_tr) / t_ours:.0f}x** faster. Extrapolated to N = {N1:,}, "
          f"m = {m1} (m (m + 1) / 2 + N m calls at the measured cost per call): "
          f"**{extrap:.3g} s = {extrap / 86400:.1f} days** (EXTRAPOLATED).", ""]
    # ---- tslearn GAK SVC
    try:
        from tslearn.svm import TimeSeriesSVC
        from tslearn.utils import to_time_series_dataset
    except ImportError:
        TimeSeriesSVC = None
        L += ["tslearn is not installed: its GAK SVC was skipped.", ""]
    if TimeSeriesSVC is not None:
        Nt = args.tslearn_test
        nmax = args.tslearn_nmax
        Ps, ys = synthetic(nmax + Nt, seed=31, n_classes=args.scale_classes)
        Pte, yte = rows(Ps, np.arange(nmax, nmax + Nt)), ys[nmax:]
        Xte_ts = to_time_series_dataset(Pte.to_list())
        budget = args.tslearn_budget
        spent = 0.0
        n = args.tslearn_n0
        L += ["### tslearn `TimeSeriesSVC(kernel=\"gak\")` against the Nyström pipeline",
              "", f"Synthetic ragged series (as the scale stage), {Nt} test series; N "
              f"doubled while the quadratic extrapolation of the last run fits the "
              f"remaining budget ({budget:.0f} s in all). Nyström: rpcholesky, m = "
              f"min(1024, N // 2), {args.recommended}; exact: RNTK-{args.scale_readout} "
              f"SVC, C = {args.synth_C:g}. gak: tslearn defaults (gamma 'auto', C = 1).",
              "", "| N train | tslearn GAK acc | GAK fit + predict s | exact RNTK SVC acc | "
              "exact s | Nyström acc | Nyström s |", "|---|---|---|---|---|---|---|"]
        last = None
        while n <= nmax:
            if last is not None and last * 4 > budget - spent:
                break
            idx = np.arange(n)
            P, y = rows(Ps, idx), ys[:n]
            Xtr_ts = to_time_series_dataset(P.to_list())
            t0 = time.perf_counter()
            gk = TimeSeriesSVC(kernel="gak", n_jobs=args.n_jobs).fit(Xtr_ts, y)
            acc_g = 100 * float(np.mean(gk.predict(Xte_ts) == yte))
            t_g = time.perf_counter() - t0
            spent += t_g
            last = t_g
            ex = exact_pipeline(P, y, Pte, yte, kernel, params["C"], args.n_jobs)
            mm = min(1024, n // 2)
            acc_n, tf_, tp_ = nys_pipeline(P, y, Pte, yte, params, mm, args.recommended,
                                           args.n_jobs)
            rows_out.append({"peer": "tslearn TimeSeriesSVC(gak)", "n": n, "m": mm,
                             "calls": "", "seconds": t_g, "per_call_us": "",
                             "ours_seconds": tf_ + tp_, "ratio": t_g / (tf_ + tp_),
                             "extrapolated_s": "", "accuracy": acc_g,
                             "note": f"exact {ex['acc']:.2f} % in "
                             f"{ex['fit_s'] + ex['predict_s']:.2f} s; Nystroem "
                             f"{acc_n:.2f} %"})
            L.append(f"| {n} | {acc_g:.2f} | {t_g:.1f} | {ex['acc']:.2f} | "
                     f"{ex['fit_s'] + ex['predict_s']:.2f} | {acc_n:.2f} (m={mm}) | "
                     f"{tf_ + tp_:.2f} |")
            log(f"tslearn GAK N={n}: {acc_g:.2f} % in {t_g:.1f} s; exact {ex['acc']:.2f} "
                f"%; Nystroem {acc_n:.2f} % in {tf_ + tp_:.2f} s")
            n *= 2
        L.append("")
        if last is not None:
            L.append(f"Largest N run: {n // 2} ({spent:.0f} s of tslearn in all).")
            L.append("")
    write_csv(rows_out, ["peer", "n", "m", "calls", "seconds", "per_call_us",
                         "ours_seconds", "ratio", "extrapolated_s", "accuracy", "note"],
              out / "peers.csv")
    md = "\n".join(L)
    (out / "peers.md").write_text(md)
    return md


# --------------------------------------------------------------------------- main
#: --quick: every stage on tiny sizes (a smoke run; the numbers mean nothing).
QUICK = dict(m="8,16", seeds="0", crossover_n="40,80", crossover_synth_n="40,80",
             crossover_test=60, learner_datasets="GunPoint", datasets="GunPoint",
             scale_n=2000, scale_test=200, scale_m=16, rate_subset=200, rate_rounds=1, sk_n=20, sk_m=4,
             tslearn_n0=20, tslearn_nmax=40, tslearn_test=20, tslearn_budget=20.0)


def _ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    shared = ROOT.parent / "shared"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/nystroem")
    p.add_argument("--stage", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes everywhere (a smoke run of every selected stage)")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--data-dir", default=str(shared / "ucr"))
    p.add_argument("--large-dir", default=str(shared / "ucr-large"),
                   help="holds FordA/FordA_TRAIN.tsv")
    p.add_argument("--datasets", default=None,
                   help="fidelity sets (default: every UCR set of --data-dir, and FordA)")
    p.add_argument("--m", default=",".join(map(str, M_GRID)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--landmarks", default="rpcholesky,uniform")
    p.add_argument("--fidelity-learners", default="streaming-ridge,ridgecv,linsvc-sq",
                   help="(b) learners of the fidelity stage")
    p.add_argument("--learners", default="linsvc-sq,linsvc-sq-cv,linsvc-hinge,ridge,"
                   "ridgecv,sgd,streaming-ridge")
    p.add_argument("--learner-datasets", default="FordA,CricketX,DistalPhalanxTW,PLAID,"
                   "AllGestureWiimoteX")
    p.add_argument("--recommended", default="ridgecv",
                   help="the linear learner of the crossover / peers pipelines")
    p.add_argument("--nys-C", type=float, default=None,
                   help="C of the linear learner in the crossover stage's Nystrom "
                        "pipeline (default: the exact SVC's C)")
    p.add_argument("--forda-kernels", default=FORDA_KERNELS,
                   help="sigma_w:sigma_b pairs among which the fidelity stage chooses "
                        "FordA's kernel (with C) by training CV")
    p.add_argument("--forda-kernel", default=None,
                   help="FordA's sigma_w:sigma_b outside the fidelity stage (default: the "
                        "fidelity stage's CV choice if it ran into --out, else sqrt2:0)")
    p.add_argument("--forda-C", type=float, default=None,
                   help="FordA's C outside the fidelity stage (default: the fidelity "
                        "stage's CV choice if it ran into --out, else 1)")
    p.add_argument("--crossover-sources", default="FordA,synthetic")
    p.add_argument("--crossover-n", default="250,500,1000,2000,3601")
    p.add_argument("--crossover-synth-n", default="500,1000,2000,4000,8000")
    p.add_argument("--crossover-test", type=int, default=2000)
    p.add_argument("--synth-C", type=float, default=10.0,
                   help="C of the exact SVC on the synthetic sets")
    p.add_argument("--synth-kernel", default="sqrt2:0",
                   help="sigma_w:sigma_b of the crossover stage's synthetic sets")
    p.add_argument("--scale-n", type=int, default=1_000_000)
    p.add_argument("--scale-test", type=int, default=20_000)
    p.add_argument("--scale-m", type=int, default=1024)
    p.add_argument("--scale-classes", type=int, default=4)
    p.add_argument("--scale-seed", type=int, default=0)
    p.add_argument("--scale-readout", default="last", choices=("last", "mean"))
    p.add_argument("--scale-keep-landmarks", action="store_true",
                   help="train the ridge on the landmark rows too (default: weight 0)")
    p.add_argument("--scale-dir", default=None,
                   help="where the feature memmap goes (default --out)")
    p.add_argument("--keep-features", action="store_true")
    p.add_argument("--rate-subset", type=int, default=10_000)
    p.add_argument("--rate-rounds", type=int, default=3,
                   help="alternating gram / transform timings on the subset")
    p.add_argument("--sk-n", type=int, default=400, help="sklearn Nystroem subset N")
    p.add_argument("--sk-m", type=int, default=64, help="sklearn Nystroem subset m")
    p.add_argument("--tslearn-n0", type=int, default=250)
    p.add_argument("--tslearn-nmax", type=int, default=16000)
    p.add_argument("--tslearn-test", type=int, default=500)
    p.add_argument("--tslearn-budget", type=float, default=600.0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:                       # tiny defaults; options given explicitly win
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    args.command = command(__file__, argv)
    args.stage = [s.strip() for s in args.stage.split(",") if s.strip()]
    bad = [s for s in args.stage if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {list(STAGES)}")
    args.m = _ints(args.m)
    args.seeds = _ints(args.seeds)
    args.landmarks = [s.strip() for s in args.landmarks.split(",") if s.strip()]
    args.fidelity_learners = [s for s in args.fidelity_learners.split(",") if s]
    args.learners = [s for s in args.learners.split(",") if s]
    args.learner_datasets = [s for s in args.learner_datasets.split(",") if s]
    args.crossover_sources = [s for s in args.crossover_sources.split(",") if s]
    args.crossover_n = _ints(args.crossover_n)
    args.forda_kernels = parse_kernels(args.forda_kernels)
    args.crossover_synth_n = _ints(args.crossover_synth_n)
    if args.datasets is None:
        names = list_ucr(args.data_dir)
        if os.path.isdir(os.path.join(args.large_dir, "FordA")):
            names.append("FordA")
        args.datasets = names
    else:
        args.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = out_dir(args.out)
    info = machine_info()
    log(machine_line(info))
    t_start = time.perf_counter()
    parts = []
    if "fidelity" in args.stage:
        parts.append(stage_fidelity(args, info))
    chosen = {}
    ex = out / "fidelity_exact.csv"
    if ex.exists():
        import csv
        for r in csv.DictReader(open(ex)):
            if r["dataset"] == "FordA":
                chosen = json.loads(r["params"])
    if args.forda_C is None:
        args.forda_C = float(chosen.get("C", 1.0))
    if args.forda_kernel is not None:
        (sw, sb), = parse_kernels(args.forda_kernel)
        args.forda_kernel = dict(sigma_w=sw, sigma_b=sb)
    elif "sigma_w" in chosen:
        args.forda_kernel = dict(sigma_w=float(chosen["sigma_w"]),
                                 sigma_b=float(chosen.get("sigma_b", 0.0)))
    else:
        args.forda_kernel = dict(FORDA_KERNEL)
    if "learners" in args.stage:
        parts.append(stage_learners(args, info))
    if "crossover" in args.stage:
        parts.append(stage_crossover(args, info))
    if "scale" in args.stage:
        parts.append(stage_scale(args, info))
    if "peers" in args.stage:
        parts.append(stage_peers(args, info))
    wall = time.perf_counter() - t_start
    info["wall_s"] = round(wall, 1)
    info["loadavg_end"] = loadavg()
    info["command"] = args.command
    (out / "run.json").write_text(json.dumps(info, indent=2))
    head = ["# Nyström features of the RNTK (issue 11)", "", f"Command: `{args.command}`",
            "", machine_line(info), f"Wall time {wall:.1f} s; load average at the end "
            f"{info['loadavg_end']}.", ""]
    (out / "report.md").write_text("\n".join(head + [p for p in parts if p]))
    log(f"wall time {wall:.1f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
