"""``ropefix cache list|clear|prune|dir``: see, empty and tidy the kit's cache (several GB once releases are in)."""

from __future__ import annotations

import argparse

from ropefix import housekeeping
from ropefix.errors import RopefixError
from ropefix.store import SECTIONS, Store, default_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="list, prune or clear the ropefix cache",
        description="list: entries and sizes, and what crashed runs left (orphans). prune: remove only what no one "
        "can miss (stale orphans, release trees whose repository is gone). clear: remove everything; refused while "
        "it would lose work (dirty work trees, branches holding saved work, --into trees that depend on the cache) "
        "unless --force. dir: print where the cache is.",
    )
    p.add_argument("action", choices=["list", "clear", "prune", "dir"])
    p.add_argument("--section", choices=SECTIONS, help="only this part of the cache (list, clear)")
    p.add_argument("--force", action="store_true", help="clear even what would lose work (listed first)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = default_root()
    if args.action == "dir":
        print(root)  # where it is, or would be: asking must not create it
        return 0
    if not root.exists():
        print(f"no cache at {root} (nothing to {args.action})")
        return 0
    store = Store(root)
    if args.action == "list":
        return _list(store, args.section)
    if args.action == "prune":
        return _prune(store)
    return _clear(store, args.section, args.force)


def _mb(size: int) -> str:
    return f"{size / 1e6:>10.1f} MB"


def _list(store: Store, section: str | None) -> int:
    entries = [e for e in store.entries() if section in (None, e.section)]
    for e in entries:
        print(f"{e.section:<10} {_mb(e.size)}  {e.name}")
    orphans = store.orphans() if section is None else []
    for o in orphans:
        state = "orphan" if o.stale else "in use?"
        print(f"{state:<10} {_mb(o.size)}  {o.path.relative_to(store.root)} ({o.age_s / 3600:.1f} h old)")
    total = sum(e.size for e in entries) + sum(o.size for o in orphans)
    print(f"{len(entries)} entries, {len(orphans)} orphan(s), {total / 1e6:.1f} MB in {store.root}")
    if any(o.stale for o in orphans):
        print("orphans are what crashed runs left; `ropefix cache prune` removes them")
    return 0


def _prune(store: Store) -> int:
    done = housekeeping.prune(store)
    freed = sum(o.size for o in done.orphans)
    for o in done.orphans:
        print(f"removed {o.path.relative_to(store.root)} ({o.size / 1e6:.1f} MB)")
    for tree in done.trees:
        print(f"removed {tree.relative_to(store.root)} (a release tree whose repository is gone)")
    for o in done.young:
        print(f"kept {o.path.relative_to(store.root)}: changed {o.age_s / 60:.0f} min ago, a run may be writing it")
    for risk in done.kept:
        print(f"kept {risk.path}: {risk.what}; look at it, then delete it yourself")
    print(f"removed {len(done.orphans) + len(done.trees)} item(s), {freed / 1e6:.1f} MB of orphans, from {store.root}")
    return 0


def _clear(store: Store, section: str | None, force: bool) -> int:
    risks = housekeeping.at_risk(store, section)
    if risks and not force:
        listed = "\n".join(f"  {r.path}: {r.what}" for r in risks)
        scope = f" --section {section}" if section else ""
        raise RopefixError(
            f"Clearing the cache at {store.root} would lose or break work:\n{listed}\nNothing was removed. Save what "
            "you need (commit and push the branches, copy the files), or keep it and remove the rest with "
            f"`ropefix cache clear --section downloads` or `ropefix cache prune`; then rerun with --force: "
            f"`ropefix cache clear{scope} --force`."
        )
    removed = store.clear(section)
    for r in risks:
        print(f"cleared although: {r.path}: {r.what}")
    print(f"removed {len(removed)} entries from {store.root}")
    return 0
