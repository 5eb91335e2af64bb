"""Tiles and scheduler: every tiling, n_jobs and backend gives the same bits."""

import numpy as np
import pytest
import joblib

from rntk_numba import RNTK, gram, pack
from rntk_numba.engine import compute_tile, prepare, resolve_n_jobs, run_tiles
from rntk_numba.tiles import pair_steps, plan_tiles


def ragged(n, lo=1, hi=40, m=1, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(T), m)) for T in rng.integers(lo, hi + 1, n)]


KERNELS = [RNTK(sigma_b=0.3, sigma_h=0.5),
           RNTK(sigma_w=1.1, activation="erf", n_layers=2, sigma_b=0.2),
           RNTK(sigma_b=0.3, sigma_h=0.5, n_layers=2, readout="mean")]


@pytest.mark.parametrize("kernel", KERNELS, ids=["relu", "erf-L2", "relu-L2-mean"])
def test_tiles_and_jobs_are_bit_identical(kernel):
    X = ragged(70, m=2)
    Y = ragged(23, m=2, seed=1)
    ref = gram(X, kernel=kernel, kind="both", n_jobs=1)
    ref_x = gram(X, Y, kernel=kernel, kind="both", n_jobs=1)
    for tile_size in (1, 3, 16, 64, 1000):
        for n_jobs in (1, 2):
            got = gram(X, kernel=kernel, kind="both", n_jobs=n_jobs, tile_size=tile_size)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
            got = gram(X, Y, kernel=kernel, kind="both", n_jobs=n_jobs,
                       tile_size=tile_size)
            assert np.array_equal(got[0], ref_x[0]) and np.array_equal(got[1], ref_x[1])


def test_symmetric_and_cross_agree_exactly_off_diagonal():
    X = ragged(40, m=3)
    k = RNTK(sigma_b=0.1)            # sigma_h = 0
    G = gram(X, kernel=k)
    C = gram(X, X, kernel=k)
    off = ~np.eye(len(X), dtype=bool)
    assert np.array_equal(G[off], C[off])         # commutative products: same bits
    assert np.array_equal(C, C.T)
    # the diagonal of the cross kernel is a different-sample computation: close only
    np.testing.assert_allclose(np.diag(C), np.diag(G), rtol=1e-6)
    Y = ragged(9, m=3, seed=4)
    assert np.array_equal(gram(X, Y, kernel=k), gram(Y, X, kernel=k).T)


def test_permutation_equivariance_is_exact():
    X = ragged(50)
    k = RNTK(sigma_b=0.2, sigma_h=0.3)
    G = gram(X, kernel=k)
    perm = np.random.default_rng(3).permutation(len(X))
    Gp = gram([X[i] for i in perm], kernel=k)
    assert np.array_equal(Gp, G[np.ix_(perm, perm)])


def test_process_backend_matches():
    X = ragged(45)
    k = KERNELS[0]
    ref = gram(X, kernel=k, n_jobs=1)
    with joblib.parallel_config(backend="loky"):
        got = gram(X, kernel=k, n_jobs=2, tile_size=8)
    assert np.array_equal(got, ref)


def test_dask_local_cluster_matches():
    distributed = pytest.importorskip("distributed", reason="dask[distributed] extra "
                                      "not installed")
    X = ragged(45, m=2)
    Y = ragged(12, m=2, seed=2)
    k = KERNELS[1]
    ref, ref_x = gram(X, kernel=k, n_jobs=1), gram(X, Y, kernel=k, n_jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            assert resolve_n_jobs() == 2
            got = gram(X, kernel=k, tile_size=6)
            got_x = gram(X, Y, kernel=k, tile_size=5)
    assert np.array_equal(got, ref) and np.array_equal(got_x, ref_x)


@pytest.mark.parametrize("symmetric", [True, False])
def test_plan_covers_every_entry_once(symmetric):
    rng = np.random.default_rng(5)
    la = rng.integers(1, 300, 157)
    lb = None if symmetric else rng.integers(1, 300, 61)
    for tile_size in (None, 10, 157):
        tiles = plan_tiles(la, lb, n_layers=2, tile_size=tile_size, n_workers=2)
        cover = np.zeros((157, 157 if symmetric else 61), dtype=int)
        for t in tiles:
            cover[t.r0:t.r1, t.c0:t.c1] += 1
            assert t.diagonal == (symmetric and t.r0 == t.c0)
            if symmetric and not t.diagonal:
                assert t.r1 <= t.c0                       # strictly above the diagonal
        if symmetric:
            # every entry on or above the diagonal exactly once (diagonal tiles are
            # square blocks whose lower half is their mirror)
            iu = np.triu_indices(157)
            assert (cover[iu] == 1).all()
        else:
            assert (cover == 1).all()
        # costs are exact pair-step counts and add up
        assert sum(t.cost for t in tiles) == pair_steps(la, lb, 2)
    brute = sum(min(a, b) for i, a in enumerate(la) for b in la[i + 1:])
    assert pair_steps(la) == brute


def test_default_plan_is_balanced_by_work():
    rng = np.random.default_rng(6)
    lengths = np.sort(rng.integers(10, 1000, 3000))        # skewed on purpose
    tiles = plan_tiles(lengths, n_workers=2)
    assert len(tiles) >= 8
    full = [t.cost for t in tiles if not t.diagonal]
    # equal-length blocks: off-diagonal tiles within a small factor of each other,
    # whereas equal-ROW blocks of sorted lengths would differ by ~100x
    assert max(full) / min(full) < 12
    rows = [t.r1 - t.r0 for t in tiles]
    assert max(rows) > 2 * min(rows)                       # rows are not equal


def test_run_tiles_streams_every_tile_and_progress(capsys):
    X = pack(ragged(30))
    problem = prepare(X, None, RNTK())
    tiles = problem.plan(tile_size=7)
    seen = []
    run_tiles(problem, tiles, lambda t, a, b: seen.append(t.index), n_jobs=2,
              progress=True)
    assert sorted(seen) == list(range(len(tiles)))
    assert "step" in capsys.readouterr().err                 # tqdm wrote its bar


def test_compute_tile_blocks_match_full_gram():
    X = pack(ragged(33))
    k = RNTK(sigma_h=0.4)
    G = gram(X, kernel=k)
    problem = prepare(X, None, k)
    for t in problem.plan(tile_size=10):
        _, ntk, _ = compute_tile(problem, t)
        assert np.array_equal(ntk, G[t.r0:t.r1, t.c0:t.c1])


def test_n_jobs_validation():
    with pytest.raises(ValueError, match="n_jobs"):
        gram(ragged(3), kernel=RNTK(), n_jobs=0)
    with pytest.raises(ValueError, match="tile_size"):
        gram(ragged(3), kernel=RNTK(), tile_size=0)


def test_overflowing_lanes_never_leak_into_other_pairs():
    """A large sigma_w makes the kernels grow geometrically along a series (relu:
    by sw^2 / 2 per step for perfectly correlated series): long pairs overflow to inf,
    legitimately. The lane that held such a pair must not turn the next pair it
    computes into NaN (regression: a 0/1 mask multiplied into the recurrent state gave
    0 * inf = NaN)."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(400)
    X = [base * (1 + 0.1 * i) if i % 2 else rng.standard_normal(30) for i in range(90)]
    k = RNTK(sigma_w=4.0)
    with pytest.warns(RuntimeWarning, match="not finite"):
        G = gram(X, kernel=k)
    assert not np.isfinite(G[1, 3])                         # a long pair overflows
    short = np.arange(0, 90, 2)
    assert np.isfinite(G[np.ix_(short, short)]).all()       # no leak into short pairs
    for i, j in [(0, 64), (2, 70), (4, 6), (10, 80), (86, 88)]:
        alone = gram([X[i], X[j]], kernel=k)[0, 1]
        assert G[i, j] == alone


def test_erf_chaotic_regime_stays_finite_for_equal_series():
    """Where sw^2 V' > 1 the cross recursion of two EQUAL series (not the same sample)
    amplifies rounding exponentially; the Cauchy-Schwarz guard keeps it finite."""
    rng = np.random.default_rng(12)
    x = np.cumsum(rng.standard_normal(300))
    x /= np.linalg.norm(x)
    k = RNTK(sigma_w=1.5, activation="erf")
    C = gram([x, x], [x], kernel=k)
    assert np.isfinite(C).all() and C[0, 0] == C[1, 0]
    assert C[0, 0] <= gram([x], kernel=k)[0, 0]


def test_overflow_warns_and_estimators_refuse():
    from rntk_numba import RNTKClassifier
    rng = np.random.default_rng(13)
    X = [rng.standard_normal(T) for T in (600, 700, 800, 650)]
    with pytest.warns(RuntimeWarning, match="not finite"):
        G = gram(X, kernel=RNTK(sigma_w=3.0))
    assert np.isinf(G).any()
    with pytest.raises(ValueError, match="non-finite"), \
            pytest.warns(RuntimeWarning, match="not finite"):
        RNTKClassifier(sigma_w=3.0).fit(X, [0, 1, 0, 1])


def test_tiny_inputs_scale_exactly():
    """relu with sigma_b = sigma_h = 0 is positively homogeneous: the kernel of
    scale * x is scale^2 times the kernel; tiny variances must not overflow the
    inverse square roots (regression: 1/sqrt(a) * 1/sqrt(b) = inf gave rho = 1)."""
    X = ragged(12, m=2, seed=8)
    k = RNTK()
    G = gram(X, kernel=k)
    for scale in (1e-100, 1e-145):
        Gs = gram([x * scale for x in X], kernel=k) / scale ** 2
        np.testing.assert_allclose(Gs, G, rtol=1e-12, atol=1e-12 * np.abs(G).max())
    Xo = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])]
    ref = gram(Xo, kernel=k)
    tiny = gram([x * 1e-160 for x in Xo], kernel=k)
    assert np.isfinite(tiny).all()
    assert tiny[0, 1] <= 2 * ref[0, 1] * 1e-320 or tiny[0, 1] < 1e-300


def test_integer_arguments_are_checked():
    with pytest.raises(TypeError, match="n_jobs"):
        gram(ragged(3), kernel=RNTK(), n_jobs=1.5)
    with pytest.raises(TypeError, match="tile_size"):
        gram(ragged(3), kernel=RNTK(), tile_size=2.7)
    with pytest.raises(ValueError, match="1e150"):
        RNTK(sigma_w=1e200)


def test_cli_without_a_command_is_a_usage_error(capsys):
    from rntk_numba.cli import main
    assert main([]) == 2 and "usage" in capsys.readouterr().err


@pytest.mark.parametrize("ragged_side", ["x", "y", "both"])
def test_length_sorted_computation_lands_in_the_original_positions(ragged_side):
    """gram computes ragged sets in order of decreasing length; every entry must come
    back at its own (i, j), whichever side is ragged."""
    rng = np.random.default_rng(14)
    eq = [rng.standard_normal(9) for _ in range(7)]
    rag = [rng.standard_normal(int(T)) for T in rng.integers(1, 30, 11)]
    X = rag if ragged_side in ("x", "both") else eq
    Y = rag[::-1] if ragged_side in ("y", "both") else eq
    k = RNTK(sigma_b=0.2)
    C = gram(X, Y, kernel=k, tile_size=3)
    for i in (0, 3, len(X) - 1):
        for j in (0, 2, len(Y) - 1):
            assert C[i, j] == gram([X[i]], [Y[j]], kernel=k)[0, 0]
    G = gram(X, kernel=k, tile_size=4)
    assert np.array_equal(G, G.T)
    assert G[1, 2] == gram([X[1], X[2]], kernel=k)[0, 1]


def test_the_benchmark_baseline_loop_still_runs_and_agrees(monkeypatch):
    """scripts/bench_gram.py's one-pair-at-a-time baseline calls the jitted core
    directly: it must follow the core's signature and agree with gram()."""
    import importlib.util
    import os
    import sys
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "bench_gram.py")
    spec = importlib.util.spec_from_file_location("bench_gram", path)
    mod = importlib.util.module_from_spec(spec)
    # numba's on-disk cache of the script's jitted functions names their module: it
    # must be importable by that name when a later run loads the cache
    monkeypatch.setitem(sys.modules, "bench_gram", mod)
    spec.loader.exec_module(mod)
    X = ragged(9, lo=2, hi=15)
    k = RNTK(sigma_b=0.2, sigma_h=0.3)
    G = mod.baseline_gram(X, k)
    ref = gram(X, kernel=k)
    assert np.abs(G - ref).max() <= 1e-12 * np.abs(ref).max()
