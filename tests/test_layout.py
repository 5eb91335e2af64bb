"""The shape of the package: its import graph has no circle, the public names users
import stay importable where they are documented, and the README's layout section
names every module of the package (and nothing that is not there)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rntk_numba"


def _modules():
    """{dotted module name: path} of every .py file of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_graph():
    """{module: set of package modules it imports}, counting every import statement,
    at the top of a file or inside a function (a lazy import is still a dependency).
    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at
    ``pkg``. Importing a submodule also runs its parents' ``__init__``; that is not a
    dependency of the importer and is not counted."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - (node.level - 1)]
                    mod = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    mod = node.module
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                           for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "rntk_numba.store.gramstore" in graph and graph["rntk_numba.gram"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_store_and_the_helpers_below_gram_never_import_gram():
    """gram(..., cache=) calls up into the store; nothing below calls back."""
    graph = _import_graph()
    below = [m for m in graph if m.startswith("rntk_numba.store")] + [
        "rntk_numba.assembly", "rntk_numba.engine", "rntk_numba.tiles",
        "rntk_numba.sequences", "rntk_numba.params"]
    for m in below:
        assert "rntk_numba.gram" not in graph[m], m
    assert "rntk_numba.store" in graph["rntk_numba.gram"]       # the lazy call upward
    # the search builds on the estimators, never the other way round
    assert "rntk_numba.search" not in graph["rntk_numba.kernel_models"]
    assert "rntk_numba.kernel_models" in graph["rntk_numba.search"]


# -- the public API -----------------------------------------------------------------------
# Names users (README, scripts, other modules) import. Moving a module must keep these
# importable from here; add names, do not remove them.
PUBLIC = {
    "rntk_numba": [
        "__version__", "RNTK", "gram", "pack", "PackedSequences", "from_channels_first",
        "to_padded", "GramStore", "load_demo", "load_ucr", "normalize", "RNTKClassifier",
        "RNTKRegressor", "RNTKSearchCV", "KernelClassifier", "KernelRegressor",
        "SeriesNormalizer", "summary_metrics", "RNTKNystroem",
        "RNTKGaussianProcessRegressor", "evidence_search"],
    "rntk_numba.nystroem": ["RNTKNystroem", "LANDMARK_METHODS", "PROJECTION_BLOCK",
                            "rows_of"],
    "rntk_numba.linear": ["StreamingRidgeClassifier"],
    "rntk_numba.gp": ["nngp_posterior", "GradientDescentEnsemble",
                      "gradient_descent_ensemble", "nngp_log_marginal_likelihood",
                      "fit_output_scale_and_noise", "RNTKGaussianProcessRegressor",
                      "evidence_search"],
    "rntk_numba.params": ["RNTK", "ACTIVATIONS", "READOUTS", "FORMULA_VERSION"],
    "rntk_numba.sequences": ["PackedSequences", "pack", "from_channels_first",
                             "to_padded", "lengths_of"],
    "rntk_numba.gram": ["gram", "KINDS", "compute_dense", "pack_pair", "select_kind",
                        "warn_if_not_finite", "tile_positions", "scatter_block",
                        "gather_block"],
    "rntk_numba.store": [
        "GramStore", "GramEntry", "GramArray", "CacheWarning", "CorruptEntryError",
        "as_store", "default_cache_dir", "register", "STORE_FORMAT", "MAP_MIN_BYTES",
        "BAND_BYTES", "series_fingerprints"],
    "rntk_numba.estimators": [
        "RNTKClassifier", "RNTKRegressor", "KernelClassifier", "KernelRegressor",
        "RNTKSearchCV", "SeriesNormalizer", "DEFAULT_RNTK_GRID", "DEFAULT_C",
        "DEFAULT_ALPHA", "KERNEL_SCALINGS", "SVM_MAX_ITER",
        # private helpers other modules and branches import from here
        "_validate_X", "_check_y", "_validate_sample_weight", "_cosine", "_root_self",
        "_gram_scale", "_check_scaling", "_require_finite"],
    "rntk_numba.kernel_specs": ["KernelSpec", "RNTKSpec", "NTKSpec", "RBFSpec",
                                "PolySpec", "grid", "flatten_padded", "FAMILIES"],
    "rntk_numba.search_kernels": ["KernelSpec", "RNTKSpec", "NTKSpec", "RBFSpec",
                                  "PolySpec", "grid", "flatten_padded", "FAMILIES"],
    "rntk_numba.analysis": ["GradientFlow", "gradient_flow_predict", "kernel_gradient",
                            "sensitivity", "sensitivity_profile", "flatness",
                            "Recommendation", "recommend_hyperparameters"],
    "rntk_numba.datasets": ["load_ucr", "read_ucr_tsv", "read_ts", "load_classification",
                            "load_demo", "list_ucr", "normalize", "NORMALIZATIONS"],
    "rntk_numba.metrics": ["friedman_ranks", "summary_metrics", "METRICS"],
    "rntk_numba.finite": ["RNNParams", "init_params", "draw_initial_states", "forward",
                          "per_sample_gradients", "ntk_of_params", "empirical_ntk",
                          "network_outputs", "TrainHistory", "train_gd"],
    "rntk_numba.baselines": ["mlp_ntk"],
    "rntk_numba.engine": ["GramProblem", "prepare", "compute_tile", "run_tiles",
                          "default_n_jobs", "warm_up", "resolve_n_jobs", "LANES"],
    "rntk_numba.tiles": ["Tile", "plan_tiles", "pair_steps", "MAX_TILE_ROWS"],
    "rntk_numba.demo": ["run_demo", "register"],
    "rntk_numba.cli": ["main", "build_parser"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_stay_importable(module):
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(mod, n)]
    assert not missing, f"{module} no longer exports {missing}"
    for name in getattr(mod, "__all__", ()):
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which is absent"


def test_re_exports_are_the_same_objects():
    import rntk_numba.estimators as E
    import rntk_numba.kernel_specs as KS
    import rntk_numba.search_kernels as SK
    import rntk_numba.store as S
    from rntk_numba.kernel_models import SVM_MAX_ITER
    from rntk_numba.search import RNTKSearchCV
    from rntk_numba.store.gramstore import GramStore
    assert S.GramStore is GramStore and E.RNTKSearchCV is RNTKSearchCV
    assert E.SVM_MAX_ITER == SVM_MAX_ITER
    assert all(getattr(SK, n) is getattr(KS, n) for n in KS.__all__)


# -- the README's map of the tree ---------------------------------------------------------
def _layout_section():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Project layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "README.md has no '## Project layout' section"
    return m.group(1)


def test_the_readme_layout_names_every_module_and_only_those():
    section = _layout_section()
    named = set(re.findall(r"(rntk_numba/[\w/]+\.py)", section))
    files = {str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")}
    assert not files - named, f"not in README's layout: {sorted(files - named)}"
    assert not named - files, f"in README's layout but not in the tree: {sorted(named - files)}"
