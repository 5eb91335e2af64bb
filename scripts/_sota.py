"""Published state-of-the-art accuracies beside the UCR table (``--sota``), offline.

Used by ``scripts/ucr_classification.py --sota [SOURCE]``, or on its own on the output
directory of an earlier run (it reads ``accuracy.csv`` and ``datasets.csv``)::

    python scripts/_sota.py results/ucr [--sota SOURCE]

SOURCE:

* ``aeon`` (default): the published accuracies that the installed aeon wheel ships as
  package data (``aeon/testing/example_results_files/classification/accuracy/``:
  HIVE-COTE 2, InceptionTime, FreshPRINCE and WEASEL 2.0 on the UCR archive, 30
  resamples each, from the bake off of Middlehurst, Schaefer and Bagnall, 2024). No
  network access: aeon's ``results_loaders`` download from timeseriesclassification.com,
  these files do not.
* a directory of ``<Method>_accuracy.csv`` files in the same layout (first column the
  data set, then one column per resample; a header row such as ``Resamples:,0,1,...``)
  -- e.g. the files of https://timeseriesclassification.com/results/ReferenceResults/
  downloaded by hand;
* a single CSV file ``dataset,<Method>,<Method>,...`` (one accuracy per data set and
  method, as a fraction in [0, 1] or in percent).

Only resample 0 is used: the archive's default train/test split, the split our table is
computed on. (Resamples 1.. are random re-splits of train + test; their mean is the
published headline figure and is not comparable with one run on the default split.)

Writes into the run's output directory:

* ``sota.csv`` -- per covered data set: our methods' and the published accuracies (%);
* ``sota.md`` -- the same table, mean accuracy and average rank per method over the
  covered sets, and the provenance;
* ``sota_cd.png`` -- aeon's critical difference diagram (``plot_critical_difference``:
  average ranks, cliques by pairwise one-sided Wilcoxon signed-rank tests with Holm's
  correction, alpha = 0.1) of our methods and these.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

from _common import pyplot  # scripts/_common.py (this folder is on sys.path)

#: file stem in aeon's package data -> column name in our tables
SOTA_METHODS = {"HC2": "HC2", "InceptionTime": "InceptionTime",
                "FreshPRINCE": "FreshPRINCE", "WEASEL-2.0": "WEASEL-2.0"}
SOTA_NAMES = {"HC2": "HIVE-COTE 2", "InceptionTime": "InceptionTime",
              "FreshPRINCE": "FreshPRINCE", "WEASEL-2.0": "WEASEL 2.0"}


def add_argument(parser) -> None:
    """The ``--sota`` option (the hook of ucr_classification.py)."""
    parser.add_argument(
        "--sota", nargs="?", const="aeon", default=None, metavar="SOURCE",
        help="add published accuracies of HIVE-COTE 2, InceptionTime, FreshPRINCE and "
             "WEASEL 2.0 (resample 0 = the archive's default split) and a critical "
             "difference diagram: SOURCE 'aeon' (default; the files the aeon wheel "
             "ships, offline), a directory of <Method>_accuracy.csv files, or a CSV "
             "dataset,<Method>,...")


def aeon_results_dir() -> str | None:
    """aeon's packaged accuracy files, or None if aeon (or the files) are absent."""
    try:
        import aeon
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(aeon.__file__), "testing",
                        "example_results_files", "classification", "accuracy")
    return path if os.path.isdir(path) else None


_HEADER_WORDS = ("dataset", "datasets", "problem", "problems", "resamples", "folds")


def _read_resample_file(path: str) -> dict:
    """{dataset: accuracy (%) of resample 0} from a ``<Method>_accuracy.csv`` file."""
    out = {}
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or not row[0].strip():
                continue
            if i == 0 and (row[0].strip().endswith(":") or row[0].strip().lower() in
                           _HEADER_WORDS):
                continue                                # "Resamples:,0,1,..."
            try:
                value = float(row[1])
            except (IndexError, ValueError):
                if i == 0:                              # the header row
                    continue
                raise ValueError(f"{path}, line {i + 1}: expected 'dataset,accuracy,"
                                 f"...', got {','.join(row[:3])!r}") from None
            out[row[0].strip()] = value
    if not out:
        raise ValueError(f"{path}: no accuracies")
    return _as_percent(out, path)


def _as_percent(values: dict, where: str) -> dict:
    finite = [v for v in values.values() if math.isfinite(v)]
    if any(v < 0 or v > 100 for v in finite):
        raise ValueError(f"{where}: accuracies must be in [0, 1] or in percent")
    scale = 100.0 if finite and max(finite) <= 1.0 else 1.0
    return {k: v * scale for k, v in values.items()}


def read_sota(source: str = "aeon") -> tuple[dict, str]:
    """({method: {dataset: accuracy %}}, description of the source).

    Raises
    ------
    FileNotFoundError
        ``source`` is ``aeon`` and the aeon wheel ships no accuracy files, or a path
        that does not exist.
    ValueError
        A malformed file (the message names it and the line).
    """
    if source == "aeon":
        path = aeon_results_dir()
        if path is None:
            raise FileNotFoundError(
                "--sota: the installed aeon ships no published accuracies (aeon not "
                "installed, or a version without aeon/testing/example_results_files); "
                "pass --sota DIR with <Method>_accuracy.csv files downloaded from "
                "https://timeseriesclassification.com/results/ReferenceResults/")
        import aeon
        desc = f"aeon {aeon.__version__} package data ({path})"
        source = path
    else:
        desc = source
    if os.path.isdir(source):
        res = {}
        for stem, col in SOTA_METHODS.items():
            f = os.path.join(source, f"{stem}_accuracy.csv")
            if os.path.isfile(f):
                res[col] = _read_resample_file(f)
        if not res:
            raise FileNotFoundError(f"--sota: {source} holds none of "
                                    f"{[s + '_accuracy.csv' for s in SOTA_METHODS]}")
        return res, desc
    if os.path.isfile(source):
        with open(source, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ValueError(f"{source}: no rows")
        first = list(rows[0])[0]
        res = {}
        for col in list(rows[0])[1:]:
            vals = {}
            for i, r in enumerate(rows):
                text = (r.get(col) or "").strip()
                if not text:
                    continue
                try:
                    vals[r[first].strip()] = float(text)
                except ValueError:
                    raise ValueError(f"{source}, line {i + 2}, column {col}: not a "
                                     f"number: {text!r}") from None
            res[col] = _as_percent(vals, f"{source}, column {col}")
        return res, desc
    raise FileNotFoundError(f"--sota: {source!r} is neither 'aeon', a directory nor a "
                            f"CSV file")


def _ranks(A: np.ndarray) -> np.ndarray:
    """Average rank per column (1 = best, ties averaged), over the rows."""
    from scipy.stats import rankdata
    return np.mean([rankdata(-row) for row in A], axis=0)


def report(out_dir, names, acc, methods, source="aeon", plot=True, log=None) -> dict:
    """Write sota.csv / sota.md / sota_cd.png for the data sets the published results
    cover (every SOTA method present). Returns a summary dict."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    sota, desc = read_sota(source)
    cols = [c for c in SOTA_METHODS.values() if c in sota] + \
        [c for c in sota if c not in SOTA_METHODS.values()]
    covered = [n for n in names if all(n in sota[c] and math.isfinite(sota[c][n])
                                       for c in cols)]
    missing = [n for n in names if n not in covered]
    labels = list(methods) + cols
    A = np.array([[acc[n][m] for m in methods] + [sota[c][n] for c in cols]
                  for n in covered]).reshape(len(covered), len(labels))
    with open(os.path.join(out_dir, "sota.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset"] + labels)
        for n, row in zip(covered, A):
            w.writerow([n] + [f"{v:.2f}" for v in row])
    means = A.mean(axis=0) if covered else np.full(len(labels), np.nan)
    ranks = _ranks(A) if covered else np.full(len(labels), np.nan)
    cd_path = None
    if plot and len(covered) >= 2:
        cd_path = os.path.join(out_dir, "sota_cd.png")
        _plot_cd(cd_path, A, labels)
    lines = ["# UCR: our kernels beside published state-of-the-art accuracies", "",
             f"Published accuracies: {desc}; **resample 0 only, the archive's default "
             f"train/test split** -- the split our accuracies are computed on (the "
             f"published headline figures average 30 resamples and are not comparable "
             f"with one run). They are context for choosing a method, not a target: "
             f"each published method was tuned by its own authors' protocol.", "",
             f"Covered: {len(covered)} of {len(names)} data sets"
             + (f" (not covered: {', '.join(missing)})" if missing else "") + ".", ""]
    head = ["dataset"] + [SOTA_NAMES.get(c, c) for c in labels]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, row in zip(covered, A):
        best = row.max()
        lines.append("| " + " | ".join([n] + [f"**{v:.2f}**" if v == best else f"{v:.2f}"
                                            for v in row]) + " |")
    lines.append("| mean | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    lines.append("| average rank | " + " | ".join(f"{v:.2f}" for v in ranks) + " |")
    if cd_path:
        lines += ["", "Critical difference diagram: `sota_cd.png` (aeon's "
                  "`plot_critical_difference`: average ranks, 1 = best; methods joined "
                  "by a bar are not significantly different by pairwise one-sided "
                  "Wilcoxon signed-rank tests with Holm's correction, alpha = 0.1). "
                  f"With {len(covered)} data sets few differences can be significant.",
                  ""]
    with open(os.path.join(out_dir, "sota.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    summary = {"source": desc, "covered": covered, "not_covered": missing,
               "methods": labels, "mean": dict(zip(labels, means.tolist())),
               "average_rank": dict(zip(labels, ranks.tolist())), "cd_plot": cd_path}
    log(f"--sota: {len(covered)} of {len(names)} data sets covered; "
        + ", ".join(f"{m} {r:.2f}" for m, r in sorted(zip(labels, ranks),
                                                      key=lambda t: t[1]))
        + " (average rank)")
    return summary


def _plot_cd(path, A, labels) -> None:
    plt = pyplot()
    from aeon.visualisation import plot_critical_difference
    fig, ax = plot_critical_difference(A, [SOTA_NAMES.get(c, c) for c in labels],
                                       alpha=0.1, width=7)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Add published state-of-the-art "
                                "accuracies to an earlier ucr_classification.py run.")
    p.add_argument("run_dir", help="the --out directory of ucr_classification.py")
    add_argument(p)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    with open(os.path.join(args.run_dir, "accuracy.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    methods = [c for c in rows[0] if c != "dataset"]
    acc = {r["dataset"]: {m: float(r[m]) for m in methods} for r in rows}
    report(args.run_dir, list(acc), acc, methods, args.sota or "aeon",
           plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
