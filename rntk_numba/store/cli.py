"""The ``rntk cache`` subcommands: ls, info, verify, prune, clear.

Owns the command line of the store: ``register(subparsers)`` (called by
:mod:`rntk_numba.cli`), the size parser and the tables it prints. May import:
:mod:`.gramstore` (the facade, and only its public methods) and :mod:`.format`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .format import _fmt_bytes
from .gramstore import GramStore

def _parse_bytes(text: str) -> int:
    """'1000', '500K', '1.5G', '2GB', '3GiB' -> bytes (K/M/G/T are powers of 1024)."""
    s = str(text).strip().upper().replace("IB", "").rstrip("B")
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(s[-1]) + 1)
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (examples: 1000000, 500M, 2G)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"size must be >= 0, got {text!r}")
    return int(value * mult)


def _kernel_short(d: dict) -> str:
    try:
        return (f"{d['activation']} L={d['n_layers']} sw={d['sigma_w']:.4g} "
                f"su={d['sigma_u']:.4g} sb={d['sigma_b']:.4g} sh={d['sigma_h']:.4g} "
                f"sv={d['sigma_v']:.4g}"
                + ("" if d.get("readout", "last") == "last" else f" {d['readout']}"))
    except (KeyError, TypeError, ValueError):
        return "?"


def _table(rows, headers) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _when(t) -> str:
    if t is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _cmd_ls(store: GramStore, args) -> int:
    entries = store.entries()
    if args.json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    if not entries:
        print(f"{store.path}: empty")
        return 0
    rows = []
    for e in sorted(entries, key=lambda e: -e["last_used"]):
        shape = "x".join(map(str, e["shape"])) if "shape" in e else "?"
        state = e["state"]
        if state == "partial" and "n_tiles" in e:
            state = f"partial {e['tiles_done']}/{e['n_tiles']}"
        rows.append((e["key"][:12], state, shape, e.get("mode", "?"),
                     "+".join(e.get("kinds", ())) or "?", _fmt_bytes(e["bytes"]),
                     _kernel_short(e.get("kernel", {})) if "kernel" in e else "-",
                     _when(e["last_used"])))
    print(_table(rows, ("KEY", "STATE", "SHAPE", "MODE", "KINDS", "SIZE",
                        "HYPERPARAMETERS", "LAST USED")))
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} entries, {_fmt_bytes(total)} in {store.path}")
    return 0


def _cmd_info(store: GramStore, args) -> int:
    print(json.dumps(store.info(args.key), indent=1, default=str))
    return 0


def _cmd_verify(store: GramStore, args) -> int:
    results = store.verify(remove=args.remove)
    bad = 0
    for key, ok, msg in results:
        print(f"{key[:12]}  {'ok' if ok else 'CORRUPT'}  {'' if ok else msg}".rstrip())
        bad += not ok
    print(f"{len(results)} entries checked, {bad} corrupt")
    return 1 if bad else 0


def _cmd_prune(store: GramStore, args) -> int:
    removed = store.prune(args.max_bytes)
    for k in removed:
        print(f"removed {k[:12]}")
    print(f"{len(removed)} removed; {_fmt_bytes(store.total_bytes())} left in {store.path}")
    return 0


def _cmd_clear(store: GramStore, args) -> int:
    n = store.clear()
    print(f"removed {n} entries from {store.path}")
    return 0


_ACTIONS = {"ls": _cmd_ls, "info": _cmd_info, "verify": _cmd_verify,
            "prune": _cmd_prune, "clear": _cmd_clear}


def register(subparsers) -> None:
    """Add ``rntk cache {ls,info,verify,prune,clear}`` to the ``rntk`` command."""
    p = subparsers.add_parser(
        "cache", help="inspect and manage the on-disk Gram store",
        description="Inspect and manage the Gram store (default directory: "
                    "$RNTK_CACHE_DIR, else ./cache).")
    p.add_argument("--dir", default=None, help="store directory")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help="store directory")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    ls = sub.add_parser("ls", parents=[common], help="list entries: size, shape, "
                        "hyperparameters, last used")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    info = sub.add_parser("info", parents=[common], help="all metadata of one entry")
    info.add_argument("key", help="entry key (a unique prefix is enough)")
    ver = sub.add_parser("verify", parents=[common],
                         help="read every entry and check its checksums (exit 1 if any "
                              "is corrupt)")
    ver.add_argument("--remove", action="store_true", help="delete corrupt entries")
    pr = sub.add_parser("prune", parents=[common],
                        help="delete least recently used entries down to a size")
    pr.add_argument("--max-bytes", required=True, type=_parse_bytes, metavar="N",
                    help="size to keep, e.g. 20G, 500M or a number of bytes")
    sub.add_parser("clear", parents=[common], help="delete every entry")
    p.set_defaults(func=_cli, _cache_parser=p)


def _cli(args) -> int:
    action = getattr(args, "cache_command", None)
    if action is None:
        args._cache_parser.print_help(sys.stderr)
        return 2
    store = GramStore(args.dir) if args.dir else GramStore()
    return _ACTIONS[action](store, args)
