"""Helpers shared by the experiment scripts (not part of the package)."""

import csv


def write_csv(rows, columns, path):
    """Write dict rows with the given columns; floats with 6 significant digits."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                        for c in columns})
