"""Plumbing shared by the experiment scripts (not part of the package): output folders,
run metadata, CSV writing and the plotting set-up, so that each script keeps only its
experiment. A script imports it after putting its own folder on ``sys.path``."""

import csv
import os
import platform
import sys
from pathlib import Path

#: The repository root (the folder above scripts/).
ROOT = Path(__file__).resolve().parent.parent


def out_dir(path) -> Path:
    """The output folder ``path``, created with its parents if absent."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine() -> dict:
    """Where a run ran: Python version, CPU count, platform, and the load average now
    (the machine may be shared; timings are read with it)."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "load_average_start": os.getloadavg()}


def loadavg() -> list:
    """The load averages now (1, 5 and 15 minutes), rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict:
    """The versions the figures depend on: Python, NumPy, numba, scikit-learn."""
    import numba
    import numpy
    import sklearn
    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "numba": numba.__version__, "sklearn": sklearn.__version__}


def command(script=None, argv=None) -> str:
    """The command line of this run, as one string. Without ``script``: as this process
    was started (``python script.py --opt ...``: the interpreter's name and ``sys.argv``).
    With ``script`` (a script's ``__file__``): ``python scripts/<name>.py`` and ``argv``,
    the arguments its ``main(argv)`` was given (default ``sys.argv[1:]``), so that the
    record is right also when a test or another script calls ``main``."""
    if script is None:
        return " ".join([Path(sys.executable).name, *sys.argv])
    return f"python scripts/{Path(script).name} " + " ".join(
        sys.argv[1:] if argv is None else argv)


def write_csv(rows, columns, path):
    """Write dict rows with the given columns; floats with 6 significant digits."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                        for c in columns})


def write_rows(rows, path):
    """Write dict rows as they are (columns: the first row's keys, values unformatted)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def pyplot(missing: str | None = None):
    """``matplotlib.pyplot`` on the non-interactive Agg backend (files only). If
    matplotlib is absent: ImportError, or, given ``missing``, print it and return None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if missing is None:
            raise
        print(missing)
        return None
    return plt
