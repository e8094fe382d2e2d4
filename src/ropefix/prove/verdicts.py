"""Where verdicts are kept: the cache (what this machine's ``verify`` runs found) and the kit's own
committed verdicts (``ropefix/data/verdicts/``: the full-history sweep, one file per release).

A later stage asks ``lookup(release)``: the cache's report when this machine verified the release,
else the committed one, else nothing (the caller verifies first or says what to run). Reports are
written whole or not at all; a file of another schema or a damaged one is reported by name and never
overwritten.
"""

from __future__ import annotations

import json
import shlex
from importlib import resources
from pathlib import Path

import ropefix
from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.prove.verdict import Report
from ropefix.store import Store

SECTION = "verdicts"


def _name(release: str, torch: str) -> str:
    return f"transformers-{release}+torch-{torch}.json"


def cached_path(release: str, torch: str, store: Store) -> Path:
    return store.path("results", SECTION, _name(release, torch))


def save(report: Report, store: Store | None = None) -> Path:
    """Keep ``report`` in the cache, merged with the families an earlier run of the same release kept."""
    store = store or Store()
    dest = cached_path(report.release, report.torch, store)
    with store.lock(f"verdict-{report.release}"):
        if dest.exists():
            old = Report.load(dest)  # a damaged or foreign file stops here, untouched
            fresh = {f.family for f in report.families}
            report = report.with_families([*(f for f in old.families if f.family not in fresh), *report.families])
        with store.atomic_file(dest, "w") as fh:
            fh.write(report.dumps())
    return dest


def kit_version() -> str:
    """The kit that makes a verdict, as the verdict records it: for a source checkout (the cells import it through
    PYTHONPATH, whatever ropefix is installed in the release's interpreter) its git commit, else the
    installed version. An editable install's metadata keeps the commit it was installed at, so it cannot say."""
    src = Path(__file__).resolve().parents[2]  # src/ in a checkout: src/ropefix/prove/verdicts.py
    if not (src.parent / "pyproject.toml").is_file():
        return ropefix.__version__
    head = proc.run(["git", "-C", str(src), "rev-parse", "--short=9", "HEAD"])
    if not head.ok:
        return ropefix.__version__
    dirty = proc.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."]).out.strip()
    return f"ropefix git {head.out.strip()}" + (" (uncommitted changes)" if dirty else "")


def committed_dir() -> Path:
    return Path(str(resources.files("ropefix") / "data" / SECTION))


def committed(release: str) -> Report | None:
    path = committed_dir() / f"transformers-{release}.json"
    return Report.load(path) if path.is_file() else None


def all_committed() -> list[Report]:
    """Every committed verdict, oldest release first."""
    from packaging.version import Version

    reports = [Report.load(p) for p in committed_dir().glob("transformers-*.json")]
    return sorted(reports, key=lambda r: Version(r.release))


def lookup(release: str, store: Store | None = None) -> Report | None:
    """The freshest report for ``release``: this machine's (newest torch first), else the kit's committed one."""
    store = store or Store()
    folder = store.path("results", SECTION)
    mine = sorted(folder.glob(f"transformers-{release}+torch-*.json")) if folder.is_dir() else []
    if mine:
        return Report.load(mine[-1])
    return committed(release)


def run_verify(python: str | Path, tree: Path, what: str, timeout_s: float = 3600) -> Report:
    """``ropefix verify TREE --json`` with ``python`` (an interpreter that imports that tree), as a Report.

    Verify keeps its report in the cache itself, so the next lookup finds it.
    """
    kit_src = Path(__file__).resolve().parents[2]
    ui.info(f"verifying {what} first: `ropefix verify {tree}` (several minutes)")
    done = proc.run(
        [python, "-m", "ropefix", "verify", tree, "--json"],
        env={"PYTHONPATH": str(kit_src), "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"},
        timeout=timeout_s,
    )
    try:
        return Report.from_json(json.loads(done.out), f"verify's report on {what}")
    except ValueError:
        last = (done.err.strip().splitlines() or ["no output"])[-1]
        raise RopefixError(
            f"verify could not judge {what} (exit {done.rc}): {last} Run `ropefix verify {shlex.quote(str(tree))}` "
            "with an interpreter that imports that tree, then retry (pr takes its JSON with --verdict FILE)."
        ) from None


def ensure(release: str, store: Store | None = None) -> Report:
    """The verdict for an exact ``release``: looked up, else verify runs on its tree in its own interpreter."""
    from ropefix.releases import relenv, sources

    found = lookup(release, store)
    if found is not None:
        ui.info(f"using the verdict for transformers {release} (ropefix {found.kit}, torch {found.torch})")
        return found
    return run_verify(
        relenv.python_for(release, store), sources.release_tree(release, store), f"transformers {release}"
    )
