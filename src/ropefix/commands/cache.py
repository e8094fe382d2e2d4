"""``ropefix cache list|clear``: see and empty the kit's cache."""

from __future__ import annotations

import argparse

from ropefix.store import SECTIONS, Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list or clear the ropefix cache")
    p.add_argument("action", choices=["list", "clear", "dir"])
    p.add_argument("--section", choices=SECTIONS, help="only this part of the cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = Store()
    if args.action == "dir":
        print(store.root)
    elif args.action == "list":
        entries = [e for e in store.entries() if args.section in (None, e.section)]
        for e in entries:
            print(f"{e.section:<10} {e.size / 1e6:>10.1f} MB  {e.name}")
        print(f"{len(entries)} entries, {sum(e.size for e in entries) / 1e6:.1f} MB in {store.root}")
    else:
        removed = store.clear(args.section)
        print(f"removed {len(removed)} entries from {store.root}")
    return 0
