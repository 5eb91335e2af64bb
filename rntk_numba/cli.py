"""The ``rntk`` command.

Subcommands live next to what they drive: each module listed in ``_SUBCOMMANDS``
defines ``register(subparsers)`` that adds its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._version import __version__

# module -> what it adds (kept in one place; a module that is absent is skipped)
_SUBCOMMANDS = ("rntk_numba.demo", "rntk_numba.store", "rntk_numba.batch",
                "rntk_numba.features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rntk", description="Recurrent Neural Tangent Kernels for time series.")
    parser.add_argument("--version", action="version",
                        version=f"rntk-numba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, ArithmeticError) as exc:
        print(f"rntk {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
