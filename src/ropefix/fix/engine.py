"""The fix engine's facade: ``scan_tree`` finds every site of every rule, ``apply_tree`` rewrites them.

Check and fix share one code path (``rewrite``): a scan is a rewrite that keeps nothing. Sites
are judged per model folder (``judge``: a stored value is only a hazard where the model combines
it with another device), and a fix leaves alone what the judgement found safe. Every rewritten
file is re-scanned before anything is written: it must compile, hold no affected site and pass
each rule's safety check, or nothing is written at all.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import difflib
import functools
import hashlib
import os
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import libcst as cst

from ropefix import files
from ropefix.errors import RopefixError
from ropefix.fix import formatting, pieces
from ropefix.fix.rules import AFFECTED, STATUSES, UNREADABLE, Finding, Rule, select
from ropefix.fix.rules.base import locate
from ropefix.store import Memo, Store


@dataclass(frozen=True)
class Site:
    model: str
    file: str  # relative to the root given to scan_tree/apply_tree
    line: int
    rule: str
    shape: str
    status: str  # "affected", "fixed", "safe", "unknown-shape" or "unreadable" (ropefix.fix.rules.STATUSES)
    code: str
    reason: str = ""  # why it has that status, in words a human can check against the code


@dataclass(frozen=True)
class ScanReport:
    root: str
    prefix: str  # where the transformers package sits under root ("src/transformers" or "")
    sites: list[Site]
    files_scanned: int

    def with_status(self, status: str) -> list[Site]:
        return [s for s in self.sites if s.status == status]

    @property
    def affected(self) -> list[Site]:
        return self.with_status(AFFECTED)

    def models(self) -> dict[str, dict[str, int]]:
        """Per model, how many sites have each status."""
        out: dict[str, dict[str, int]] = {}
        for s in self.sites:
            counts = out.setdefault(s.model, dict.fromkeys(STATUSES, 0))
            counts[s.status] += 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "prefix": self.prefix,
            "files_scanned": self.files_scanned,
            "sites": [asdict(s) for s in self.sites],
        }


@dataclass(frozen=True)
class Rewrite:
    """One file as ``apply`` rewrites it, text before and after (``ropefix.fix.patch`` turns these into the
    one patch model the shipping stages use)."""

    file: str
    before: str
    after: str
    sites_fixed: list[Site]

    @property
    def diff(self) -> str:
        return unified_diff(self.file, self.before, self.after)


@dataclass(frozen=True)
class ApplyReport:
    root: str
    prefix: str
    changes: list[Rewrite]
    dry_run: bool
    remaining: list[Site] = field(default_factory=list)  # sites after the rewrite (none affected)
    modular_checked: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def diff(self) -> str:
        return "".join(ch.diff for ch in self.changes)

    def summary(self) -> str:
        if not self.changes:
            return "nothing to change: every site the rules know is already fixed"
        n = sum(len(ch.sites_fixed) for ch in self.changes)
        verb = "would fix" if self.dry_run else "fixed"
        return f"{verb} {n} site(s) in {len(self.changes)} file(s)"


def unified_diff(rel: str, before: str, after: str) -> str:
    """A ``git apply``-able diff of one file (a/ and b/ prefixes)."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{rel}", f"b/{rel}"
    )
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)


# --- locating files ---------------------------------------------------------------------------


def package_dir(root: Path) -> tuple[Path, str]:
    """The transformers package under ``root`` and its relative prefix."""
    root = Path(root)
    if (root / "src" / "transformers" / "models").is_dir():
        return root / "src" / "transformers", "src/transformers"
    if (root / "models").is_dir() and (root / "__init__.py").exists():
        return root, ""
    raise RopefixError(
        f"{root} is neither a transformers checkout (with src/transformers/models) nor an installed "
        "transformers package folder (with models/ and __init__.py). Pass one of those, e.g. the folder "
        "`ropefix checkout` made or `python -c 'import transformers, os; print(os.path.dirname(transformers.__file__))'`."
    )


def model_files(pkg: Path, models: list[str] | None = None) -> list[Path]:
    """Every modeling_*.py and modular_*.py of the model folders (optionally only ``models``)."""
    base = pkg / "models"
    if models:
        missing = [m for m in models if not (base / m).is_dir()]
        if missing:
            raise RopefixError(
                f"No model folder {', '.join(missing)} under {base}. Model names are folder names "
                "such as qwen2_vl or qwen2_5_vl; `ropefix scan PATH` lists the ones with sites."
            )
        folders = [base / m for m in models]
    else:
        with os.scandir(base) as entries:  # one listing per folder: a release has 400+ of them
            folders = sorted(base / e.name for e in entries if e.is_dir())
    found: list[Path] = []
    for folder in folders:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".py"))
        found += [folder / n for n in names if n.startswith("modular_")]
        found += [folder / n for n in names if n.startswith("modeling_")]
    return found


# --- one file, one rule -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    text: str
    findings: list[tuple[str, Finding]]  # (rule name, finding) with file line numbers
    problems: list[str]
    touched: list[tuple[int, int]]  # 1-based inclusive line ranges that changed


# Scan results of code pieces, by the piece's hash: libcst needs ~10 us per byte, so a release
# scanned before (or one sharing most functions with it) is answered from here. The memo belongs to the
# cache (``Store.memo``) the caller passes down; its name carries the hash of the engine's own source, so
# a changed rule never reads a stale answer. ``_ACTIVE`` is the memo of the scan or apply in progress.
_ACTIVE: contextvars.ContextVar[Memo | None] = contextvars.ContextVar("ropefix_scan_memo", default=None)


@functools.cache  # the engine's source does not change while it runs
def _fingerprint() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for p in [here / "engine.py", here / "cst.py", here / "pieces.py", *sorted((here / "rules").glob("*.py"))]:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def scan_memo(store: Store | None) -> Memo | None:
    """The scan memo of this engine's code in ``store``; with none given, the user's cache's, or no memo at all
    when that cache cannot be used (a memo only saves time: scanning and rewriting never need the cache)."""
    if store is None:
        try:
            store = Store()
        except RopefixError:
            return None
    return store.memo(f"scan-memo-{_fingerprint()}")


@contextlib.contextmanager
def _using(memo: Memo | None) -> Iterator[None]:
    token = _ACTIVE.set(memo)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        if memo is not None:
            memo.save()


def _run_on(code: str, rule: Rule, fix: bool, keep: frozenset[str]) -> tuple[str, list[Finding], list[str]]:
    memo = _ACTIVE.get()
    key = f"{rule.name}:{hashlib.sha256(code.encode()).hexdigest()}"
    if not fix and memo is not None and key in memo:
        found, problems = memo.get(key)
        return code, [Finding(*f) for f in found], list(problems)
    t = rule.transformer(fix, keep)
    new = cst.parse_module(code).visit(t)
    found, problems = locate(code, t.findings), t.problems()
    if not fix:
        if memo is not None:
            memo[key] = ([list(vars(f).values()) for f in found], problems)
        return code, found, problems  # nothing rewritten: no need to print the tree again
    return new.code, found, problems


class Unparsable(RopefixError):
    """Code a rule must read does not parse (libcst's line and message); scan calls its file unreadable."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}; ropefix reads model files as Python 3 source.")
        self.line, self.why = line, why


class _Unspliceable(Exception):
    """A rewrite of a slice touched a line the slice left out: redo that function whole."""


def rewrite_rule(text: str, rule: Rule, fix: bool, keep: frozenset[str] = frozenset()) -> Outcome:
    """Find (and with ``fix``, rewrite) one rule's sites in one file's text, as they stand in it
    (not yet judged with the rest of the model: see ``judge``). ``keep``: sites not to rewrite."""
    if not any(n in text for n in rule.needles) or not all(r in text for r in rule.requires):
        return Outcome(text, [], [], [])
    found = pieces.chunks(text, rule.needles, rule.hint)
    if found is None:  # indentation the regex cut cannot follow: Python's own parser cuts instead
        found = pieces.chunks_by_ast(text, rule.needles, rule.hint)
    try:
        if found is not None:
            return _by_pieces(text, found, rule, fix, keep)
    except cst.ParserSyntaxError:
        pass  # a function that does not stand alone: read the whole file instead
    try:
        new, got, problems = _run_on(text, rule, fix, keep)
    except cst.ParserSyntaxError as e:
        raise Unparsable(e.editor_line, f"a syntax error ({e.message.splitlines()[0]})") from e
    touched = _changed_ranges(text.splitlines(True), new.splitlines(True), 0) if new != text else []
    return Outcome(new, [(rule.name, f) for f in got], problems, touched)


def _by_pieces(text: str, found: list[pieces.Piece], rule: Rule, fix: bool, keep: frozenset[str]) -> Outcome:
    findings: list[tuple[str, Finding]] = []
    problems: list[str] = []
    edits: list[tuple[int, int, list[str]]] = []
    for whole in found:
        part = pieces.sliced(whole, rule.context, rule.mentions, rule.statement, comments=fix)
        try:
            got, probs, changed = _on_piece(part, rule, fix, keep)
        except (cst.ParserSyntaxError, _Unspliceable):
            if part is whole:
                raise
            got, probs, changed = _on_piece(whole, rule, fix, keep)
        findings += [(rule.name, f) for f in got]
        problems += probs
        edits += changed
    if edits:
        text, touched = _splice(text.splitlines(keepends=True), edits)
    else:
        touched = []
    findings.sort(key=lambda rf: rf[1].line)
    return Outcome(text, findings, problems, touched)


def _on_piece(
    piece: pieces.Piece, rule: Rule, fix: bool, keep: frozenset[str]
) -> tuple[list[Finding], list[str], list[tuple[int, int, list[str]]]]:
    """Findings with file line numbers, problems, and the edits as (first, end, new lines) in file lines."""
    new, got, probs = _run_on(piece.text, rule, fix, keep)
    rows = piece.rows
    found = [Finding(rows[f.line - 1] + 1, f.shape, f.status, f.code, f.reason) for f in got]
    edits: list[tuple[int, int, list[str]]] = []
    if new != piece.text:
        pad = " " * piece.indent
        old_lines, new_lines = piece.text.splitlines(keepends=True), new.splitlines(keepends=True)
        sm = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag == "equal":
                continue
            if any(k in piece.fake for k in range(i1, i2)) or any(
                rows[k + 1] != rows[k] + 1 for k in range(i1, i2 - 1)
            ):
                raise _Unspliceable
            first = rows[i1] if i1 < len(rows) else rows[-1] + 1
            end = rows[i2 - 1] + 1 if i2 > i1 else first
            edits.append((first, end, [pad + ln if ln.strip() else ln for ln in new_lines[j1:j2]]))
    return found, probs, edits


def _splice(lines: list[str], edits: list[tuple[int, int, list[str]]]) -> tuple[str, list[tuple[int, int]]]:
    """The file with every edit made, and the 1-based inclusive ranges of new lines in the result."""
    out: list[str] = []
    touched: list[tuple[int, int]] = []
    pos = 0
    for first, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if first < pos:
            raise AssertionError("two rewrites of the same lines")
        out += lines[pos:first]
        if new:
            touched.append((len(out) + 1, len(out) + len(new)))
        out += new
        pos = end
    out += lines[pos:]
    return "".join(out), touched


def _changed_ranges(old: list[str], new: list[str], offset: int) -> list[tuple[int, int]]:
    """1-based inclusive ranges, in the NEW text, of lines that differ (offset: the piece's first line)."""
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return [(offset + j1 + 1, offset + j2) for tag, _, _, j1, j2 in sm.get_opcodes() if tag != "equal" and j2 > j1]


def _scan_text(text: str, rules: list[Rule]) -> Outcome:
    """Every rule's sites in one file's text, not yet judged with the rest of its model."""
    found: list[tuple[str, Finding]] = []
    problems: list[str] = []
    for rule in rules:
        o = rewrite_rule(text, rule, fix=False)
        found += o.findings
        problems += o.problems
    found.sort(key=lambda rf: rf[1].line)  # stable: rules in registry order where lines tie
    return Outcome(text, found, problems, [])


def judge(
    per_file: list[list[tuple[str, Finding]]], rules: list[Rule]
) -> tuple[list[list[tuple[str, Finding]]], dict[str, frozenset[str]]]:
    """One model folder's findings (per file) as each rule finally judges them, and per rule the
    sites (by code) the judgement took out of ``affected``: a fix must leave those alone."""
    out = [list(fs) for fs in per_file]
    keep: dict[str, frozenset[str]] = {}
    for rule in rules:
        where = [(i, k) for i, fs in enumerate(per_file) for k, (name, _) in enumerate(fs) if name == rule.name]
        before = [per_file[i][k][1] for i, k in where]
        after = rule.resolve(before)
        if len(after) != len(before):
            raise AssertionError(f"rule {rule.name}: resolve must judge every finding once")
        for (i, k), f in zip(where, after):
            out[i][k] = (rule.name, f)
        keep[rule.name] = frozenset(b.code for b, a in zip(before, after) if b.status == AFFECTED != a.status)
    return out, keep


def rewrite(text: str, rules: list[Rule], fix: bool, keep: dict[str, frozenset[str]] | None = None) -> Outcome:
    """Every rule in order over one file's text, judged as a model of its own (or, with ``keep``,
    as part of a model judged already); with ``fix`` the result is formatted. Findings are those of
    ``text`` as given."""
    scanned = _scan_text(text, rules)
    (found,), own = judge([scanned.findings], rules)
    if not fix:
        return Outcome(text, found, scanned.problems, [])
    keep = own if keep is None else keep
    touched: list[tuple[int, int]] = []
    for rule in rules:
        o = rewrite_rule(text, rule, True, keep.get(rule.name, frozenset()))
        if o.text != text:
            text = formatting.format_lines(o.text, o.touched)
            touched += o.touched
    return Outcome(text, found, scanned.problems, touched)


# --- whole trees ------------------------------------------------------------------------------


def _sites(rel: str, model: str, found: list[tuple[str, Finding]]) -> list[Site]:
    return [Site(model, rel, f.line, name, f.shape, f.status, " ".join(f.code.split()), f.reason) for name, f in found]


def unreadable(data: bytes, rel: str) -> tuple[int, str] | None:
    """(line, why) when a model file is not UTF-8 Python 3 source, else None (memoised by content: a full
    parse costs ~20 ms per modeling file, 4-9x ``grep -rn rope_deltas`` over a whole release, so only
    ``apply_tree`` and a scan that met a parse failure pay it)."""
    memo = _ACTIVE.get()
    key = f"readable:{hashlib.sha256(data).hexdigest()}"
    if memo is not None and key in memo:
        _, found = memo.get(key)
        return (int(found[0]), found[1]) if found else None
    problem: tuple[int, str] | None = None
    try:
        compile(data.decode("utf-8"), rel, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except UnicodeDecodeError as e:
        problem = (data.count(b"\n", 0, e.start) + 1, f"not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})")
    except SyntaxError as e:
        problem = (e.lineno or 1, f"a syntax error ({e.msg})")
    except ValueError as e:  # a NUL byte
        problem = (data.count(b"\n", 0, max(data.find(b"\0"), 0)) + 1, f"not Python source ({e})")
    if memo is not None:
        memo[key] = ([], [] if problem is None else [str(problem[0]), problem[1]])
    return problem


def _wanted(data: bytes, rules: list[Rule]) -> bool:
    """Whether any rule could have a site in a file with these bytes (no decoding, no parsing).

    Each word is looked for once per file (the rules share ``rope_deltas``), required words first.
    """
    seen: dict[str, bool] = {}

    def has(word: str) -> bool:
        if word not in seen:
            seen[word] = word.encode() in data
        return seen[word]

    return any(all(has(q) for q in r.requires) and any(has(n) for n in r.needles) for r in rules)


def _models(files: list[Path], rules: list[Rule]) -> list[tuple[str, list[tuple[Path, bytes]]]]:
    """The files that can hold a site, with their bytes, grouped by model folder (in order)."""
    out: list[tuple[str, list[tuple[Path, bytes]]]] = []
    for path in files:
        data = path.read_bytes()
        if not _wanted(data, rules):  # bytes first: most files never reach a parser
            continue
        model = path.parent.name
        if not out or out[-1][0] != model:
            out.append((model, []))
        out[-1][1].append((path, data))
    return out


def scan_tree(
    root: Path | str,
    models: list[str] | None = None,
    rules: list[str] | str | None = None,
    memo: bool = True,
    store: Store | None = None,
) -> ScanReport:
    """Every site of the chosen rules under ``root``, judged per model folder; answers come from the scan
    memo of ``store`` (default: the user's cache), ``memo=False`` parses everything afresh.

    A file that does not decode, or whose code a rule reads does not parse, is one ``unreadable``
    site (line and why, from Python's own compiler). Code no rule reads is not parsed here (a full
    parse of every file costs several times the whole scan); ``apply_tree`` parses each file whole
    before it writes anything."""
    root = Path(root)
    pkg, prefix = package_dir(root)
    if not memo:
        pieces.forget()
    with _using(scan_memo(store) if memo else None):
        return _scan(root, pkg, prefix, models, rules)


def _scan(root: Path, pkg: Path, prefix: str, models: list[str] | None, rules: list[str] | str | None) -> ScanReport:
    chosen = select(rules)
    sites: list[Site] = []
    files = model_files(pkg, models)
    for model, texts in _models(files, chosen):
        read: list[tuple[str, Outcome]] = []
        for path, data in texts:
            rel = path.relative_to(root).as_posix()
            try:  # a file is unreadable when it does not decode, or when code a rule reads does not parse
                read.append((rel, _scan_text(data.decode(), chosen)))
            except (UnicodeDecodeError, Unparsable, ValueError) as e:
                line, why = unreadable(data, rel) or (getattr(e, "line", 1), getattr(e, "why", str(e)))
                reason = "not UTF-8 Python 3 source: no site in it can be judged"
                sites.append(Site(model, rel, line, "all", "unreadable", UNREADABLE, why, reason))
        judged, _ = judge([o.findings for _, o in read], chosen)
        for (rel, _), found in zip(read, judged):
            sites += _sites(rel, model, found)
    return ScanReport(str(root), prefix, sites, len(files))


def apply_tree(
    root: Path | str,
    models: list[str] | None = None,
    rules: list[str] | str | None = None,
    dry_run: bool = False,
    store: Store | None = None,
) -> ApplyReport:
    """Rewrite every affected site under ``root``; all files are written, or none.

    Call it once per model with that model's rules to give families different rules (each call
    writes its own files; the model folders do not overlap). Reading uses ``store``'s scan memo (default:
    the user's cache); the rewrite itself is always done afresh.
    """
    with _using(scan_memo(store)):
        return _apply(Path(root), models, rules, dry_run)


def _apply(root: Path, models: list[str] | None, rules: list[str] | str | None, dry_run: bool) -> ApplyReport:
    pkg, prefix = package_dir(root)
    chosen = select(rules)
    changes: list[Rewrite] = []
    remaining: list[Site] = []
    for model, texts in _models(model_files(pkg, models), chosen):
        for path, data in texts:
            rel = path.relative_to(root).as_posix()
            if bad := unreadable(data, rel):
                raise RopefixError(
                    f"{rel} line {bad[0]}: {bad[1]}. ropefix reads model files as UTF-8 Python 3 source and cannot "
                    f"rewrite this one safely. Nothing was written. Fix or restore the file (in a checkout: "
                    f"`git checkout -- {shlex.quote(rel)}`) and retry."
                )
        decoded = [(path, data.decode()) for path, data in texts]
        judged, keep = judge([_scan_text(text, chosen).findings for _, text in decoded], chosen)
        for (path, before), found in zip(decoded, judged):
            rel = path.relative_to(root).as_posix()
            fixed = [s for s in _sites(rel, model, found) if s.status == AFFECTED]
            if not fixed:
                remaining += _sites(rel, model, found)
                continue
            done = rewrite(before, chosen, fix=True, keep=keep)
            remaining += _sites(rel, model, check_text(rel, done.text, chosen))
            if done.text != before:
                changes.append(Rewrite(rel, before, done.text, fixed))
    checked: list[str] = []
    if not dry_run and changes:
        _write_all(root, changes)
        from ropefix.fix import modular  # only when the tree can regenerate its modeling files

        try:
            checked = modular.confirm(root, prefix, changes)
        except BaseException:
            _write_all(root, [Rewrite(ch.file, ch.after, ch.before, []) for ch in changes])
            raise
    return ApplyReport(str(root), prefix, changes, dry_run, remaining, checked)


def check_text(rel: str, after: str, rules: list[Rule]) -> list[tuple[str, Finding]]:
    """The safety gate before any write: the code compiles, holds no affected site, and passes
    every rule's own check (e.g. no move onto cache_position's device where it may be None)."""
    try:
        compile(after, rel, "exec")
    except SyntaxError as e:
        raise RopefixError(f"Rewriting {rel} produced code that does not compile ({e}); a bug in a rule.") from e
    again = rewrite(after, rules, fix=False)
    left = [f for _, f in again.findings if f.status == AFFECTED]
    if left or again.problems:
        why = "; ".join([*again.problems, *(f"line {f.line}: {f.shape} still affected" for f in left)])
        raise RopefixError(f"The rewrite of {rel} failed its own safety check ({why}); nothing was written.")
    return again.findings


def _write_all(root: Path, changes: list[Rewrite]) -> None:
    """All files together (each wholly old or wholly new, every one staged before the first replace)."""
    files.atomic_write_many((root / ch.file, ch.after) for ch in changes)
