"""Run the matrix's tox envs (in parallel when asked), keep going on failures, collect the cells.

discover (``plan``) -> run each env (``run_env``: one ``tox run`` with ``--result-json``) -> read
what tox and verify wrote (``interpret``, pure) -> a Matrix. An env whose install fails is a
skipped cell with pip's reason; an env whose verify wrote no result is a failed cell.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropefix import proc, ui
from ropefix.errors import RopefixError
from ropefix.matrix import toxenv
from ropefix.matrix.model import BadResult, Cell, EnvSpec, Matrix, Timings, cell_from_result
from ropefix.prove.verdict import State

TOX_RESULTS = "_tox"  # beside the verify JSONs: tox's --result-json per env (not hidden: CI artifacts drop dotfiles)


@dataclass(frozen=True)
class Plan:
    specs: tuple[EnvSpec, ...]
    labels: tuple[str, ...]
    unknown_labels: tuple[str, ...]
    unknown_envs: tuple[str, ...]


def plan(tox_ini: Path, labels: list[str], envs: list[str]) -> Plan:
    """The envs to run: those under ``labels`` plus those named in ``envs``, in tox.ini's order."""
    known = toxenv.all_specs(tox_ini)
    names: list[str] = []
    unknown_labels = []
    for label in labels:
        found = toxenv.list_envs(tox_ini, label)
        if not found:
            unknown_labels.append(label)
        names += [n for n in found if n not in names]
    names += [n for n in envs if n not in names]
    specs = tuple(known[n] for n in names if n in known)
    unknown_envs = tuple(n for n in names if n not in known)
    return Plan(specs, tuple(labels), tuple(unknown_labels), unknown_envs)


@dataclass(frozen=True)
class RunOptions:
    tox_ini: Path
    results_dir: Path  # verify JSON lands here as <env>.json (tox.ini reads ROPEFIX_MATRIX_OUT)
    parallel: int = 1
    kit_wheel: Path | None = None  # built once and handed to every env (``tox --installpkg``)
    timeout_s: float | None = None
    workdir: Path | None = None  # tox's --workdir (default: .tox beside tox.ini); benchmarks use a fresh one
    env: tuple[tuple[str, str], ...] = ()  # extra environment for tox, e.g. PIP_CACHE_DIR
    verify_args: tuple[str, ...] = ()  # passed on to verify in every env (tox posargs)


def build_kit_wheel(project: Path, dest: Path) -> Path:
    """Build ropefix's wheel once, so parallel envs never race on tox's shared packaging env."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("ropefix-*.whl"):
        old.unlink()
    proc.run([proc.python(), "-m", "pip", "wheel", "-q", "--no-deps", "-w", dest, project], check=True)
    wheels = sorted(dest.glob("ropefix-*.whl"))
    if not wheels:
        raise RopefixError(
            f"pip built no ropefix wheel from {project}. Check that `pip wheel {shlex.quote(str(project))}` works."
        )
    return wheels[-1]


def run(p: Plan, opts: RunOptions) -> Matrix:
    """Run every env of ``p``; unknown envs and labels become what they are, the run goes on."""
    start = time.monotonic()
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    cells: dict[str, Cell] = {
        name: Cell(
            env=name,
            transformers="?",
            torch="?",
            status=State.SKIPPED,
            reason=f"tox.ini declares no env named {name!r} (see `tox -c {shlex.quote(str(opts.tox_ini))} list`)",
        )
        for name in p.unknown_envs
    }
    n = len(p.specs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.parallel)) as pool:
        futures = {pool.submit(run_env, spec, opts): spec for spec in p.specs}
        if n:
            ui.info(f"matrix: {n} envs, {max(1, opts.parallel)} at a time")
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            spec = futures[fut]
            cell = fut.result()
            cells[spec.name] = cell
            ui.info(
                f"[{i}/{n}] {spec.name}: {cell.status.value} in {cell.timings.total_s:.0f}s"
                + (f" ({cell.reason})" if cell.reason else "")
                + f" ({time.monotonic() - start:.0f}s elapsed)"
            )
    order = [s.name for s in p.specs] + list(p.unknown_envs)
    return Matrix(
        cells=tuple(cells[name] for name in order),
        labels=p.labels,
        unknown_labels=p.unknown_labels,
        duration_s=time.monotonic() - start,
    )


def run_env(spec: EnvSpec, opts: RunOptions) -> Cell:
    """One env, start to end; whatever goes wrong ends as a cell, never as an exception."""
    result_file = opts.results_dir / f"{spec.name}.json"
    tox_json = opts.results_dir / TOX_RESULTS / f"{spec.name}.json"
    tox_json.parent.mkdir(parents=True, exist_ok=True)
    for stale in (result_file, tox_json):
        stale.unlink(missing_ok=True)  # a result from an earlier run must never pass for this one
    cmd: list[Any] = [*toxenv.tox_cmd(), "-c", opts.tox_ini, "run", "-e", spec.name, "--result-json", tox_json]
    if opts.kit_wheel:
        cmd += ["--installpkg", opts.kit_wheel]
    if opts.workdir:
        cmd += ["--workdir", opts.workdir]
    if opts.verify_args:
        cmd += ["--", *opts.verify_args]
    ui.info(f"{spec.name}: starting (transformers {spec.transformers}, torch {spec.torch})")
    began = time.monotonic()
    try:
        done = proc.run(
            cmd, env={**dict(opts.env), "ROPEFIX_MATRIX_OUT": str(opts.results_dir)}, timeout=opts.timeout_s
        )
        rc, tail = done.rc, (done.out + done.err)[-4000:]
    except (
        subprocess.TimeoutExpired,
        RopefixError,
        OSError,
    ) as e:  # a timeout or a tox that cannot start: the cell says so, the run goes on
        rc, tail = -1, f"{type(e).__name__}: {e}"
    wall = time.monotonic() - began
    return interpret(spec, rc, _load(tox_json), _load(result_file), tail, wall, result_file)


def merge(folder: Path, specs: dict[str, EnvSpec]) -> Matrix:
    """A Matrix from results other machines wrote (CI jobs, one env each) under ``folder``.

    Each env left ``<env>.json`` (verify) beside ``_tox/<env>.json`` (tox's result JSON).
    """
    cells = []
    found = sorted(folder.rglob(f"{TOX_RESULTS}/*.json"))
    if not found:
        raise RopefixError(
            f"No tox results ({TOX_RESULTS}/<env>.json) under {folder}. Point --merge at the folder "
            "the env jobs' artifacts were downloaded to."
        )
    for tox_json in found:
        name = tox_json.stem
        tox_result = _load(tox_json)
        env = ((tox_result or {}).get("testenvs") or {}).get(name) or {}
        rc = int((env.get("result") or {}).get("exit_code", -1))
        result_file = tox_json.parent.parent / f"{name}.json"
        spec = specs.get(name, EnvSpec(name))
        cells.append(interpret(spec, rc, tox_result, _load(result_file), "", 0.0, result_file))
    return Matrix(cells=tuple(cells), duration_s=max((c.timings.total_s for c in cells), default=0.0))


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def interpret(
    spec: EnvSpec,
    rc: int,
    tox_result: dict[str, Any] | None,
    verify: Any,
    tail: str,
    wall_s: float,
    result_file: Path,
) -> Cell:
    """Decide a cell from tox's result JSON and the verify JSON (pure)."""
    env = ((tox_result or {}).get("testenvs") or {}).get(spec.name) or {}
    setup = env.get("setup") or []
    test = env.get("test") or []
    install_s = sum(float(c.get("elapsed", 0)) for c in setup)
    test_s = sum(float(c.get("elapsed", 0)) for c in test)
    total_s = float((env.get("result") or {}).get("duration", wall_s))
    timings = Timings(
        create_s=round(max(0.0, total_s - install_s - test_s), 3),
        install_s=round(install_s, 3),
        test_s=round(test_s, 3),
        total_s=round(total_s, 3),
    )

    def cell(status: State, reason: str) -> Cell:
        return Cell(spec.name, spec.transformers, spec.torch, status, reason, timings)

    failed_setup = [c for c in setup if c.get("retcode", 0) != 0]
    if failed_setup:
        c = failed_setup[0]
        why = _error_line(str(c.get("err", "")) + "\n" + str(c.get("output", "")))
        return cell(State.SKIPPED, f"install failed ({c.get('run_id', 'setup')}): {why}")
    if not env or (not test and verify is None):
        # tox stopped before running anything: no interpreter, a broken env, a timeout
        return cell(State.SKIPPED, f"tox could not run the env (exit {rc}): {_error_line(tail)}")
    if verify is None:
        return cell(State.FIX_FAILED, f"verify exited {rc} without writing {result_file.name}: {_error_line(tail)}")
    try:
        return cell_from_result(spec, verify, timings)
    except BadResult as e:
        return cell(State.FIX_FAILED, f"{result_file.name}: {e}")


_ERROR = re.compile(r"(\berror\s*:|^\w*(Error|Exception)\b)", re.IGNORECASE)


def _error_line(text: str) -> str:
    """The line that says what went wrong (pip's ``ERROR:``, ``ropefix: error:``, an exception), else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR.search(line)]
    return (errors or lines or ["no output"])[-1][:300]
