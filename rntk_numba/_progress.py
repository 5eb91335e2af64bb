"""The streaming methods' progress bar: a tqdm bar closed however its block ends, or
``None`` when progress is off (callers update it only when it is not None)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(enabled: bool, total: float, desc: str, unit: str = "step"):
    """``with progress_bar(on, total, "name") as bar:`` -- a bar of ``total`` units,
    or None."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()
