"""Cut a file into the small pieces the rules need to parse: functions, then statements.

Parsing with libcst costs about 10 us per byte and a release holds megabytes of model code, while
a site needs only its function, and of that function only the statements that mention what the
rule is about. So a file is cut twice, both times without libcst:

1. ``chunks``: method- and function-sized pieces found by indentation (regexes over the text, no
   parsing), kept only when they hold a rule's needle and pass its hint. ``chunks_by_ast`` does
   the same from Python's own (C) parser for files the indentation cut cannot handle.
2. ``sliced``: inside one function, Python's ``ast`` gives every statement's lines; statements that
   hold none of the rule's context words are left out, each run of them replaced by one line
   (``pass``, or a name the rule must still see used, such as ``cache_position``), so the compound
   statements around a site (its guards) and the order of what is kept stay as they are. That
   line keeps apart what was apart: two kept statements are neighbours in the slice only when
   they are in the file. The signature becomes one line of parameter names.

A piece remembers, for each of its lines, the file line it came from (``rows``), so findings get
file line numbers and rewritten lines go back where they came from.
"""

from __future__ import annotations

import ast
import bisect
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Piece:
    """Lines of a file that parse alone, dedented by ``indent`` spaces.

    ``rows[i]`` is the 0-based file line of the piece's line ``i``; ``fake`` holds the piece lines
    that stand for left-out statements (``pass``): nothing may rewrite those.
    """

    rows: tuple[int, ...]
    indent: int
    text: str
    fake: frozenset[int] = field(default_factory=frozenset)

    @property
    def start(self) -> int:
        return self.rows[0]


# Patterns start with a newline, not ``^``: the regex engine then jumps from newline to newline
# (about five times faster than trying ``^`` at every character of a 150 KB file).
# A line less indented than a body at column 0 / 4 (closing brackets and comments do not count).
_STOP = {0: re.compile(r"\n[^\s)\]}#]"), 4: re.compile(r"\n {0,3}[^\s)\]}#]")}
# A line that opens a chunk: a decorator or a def/class at column 0, or a method at 4 spaces.
_OPENERS = re.compile(r"\n( {0,4})(?:@|def |async def |class )")
_FIRST = ("@", "def ", "async def ", "class ")


@functools.lru_cache(maxsize=4)
def _openers(text: str) -> tuple[list[int], list[int]] | None:
    """Where every def/class/decorator run starts (line offsets) and its indentation; None when one
    sits at 1 to 3 spaces, which the cut does not follow. Cached: every rule asks about the same file."""
    starts: list[int] = [0] if text.startswith(_FIRST) else []
    indents: list[int] = [0] if starts else []
    for m in _OPENERS.finditer(text):
        at, indent = m.start() + 1, len(m.group(1))
        if indent not in (0, 4):
            return None
        prev = text[text.rfind("\n", 0, at - 1) + 1 : at]
        if prev.startswith(" " * indent + "@") and not prev.startswith(" " * (indent + 1)):
            continue  # a def under a one-line decorator belongs to the decorator's chunk
        starts.append(at)
        indents.append(indent)
    return starts, indents


def _dedented(text: str, row: int, indent: int) -> Piece | None:
    out = []
    lines = text.splitlines(keepends=True)
    for ln in lines:
        lead = len(ln) - len(ln.lstrip(" "))
        if ln.strip() and lead < indent and not ln.lstrip().startswith("#"):
            return None
        out.append(ln[min(lead, indent) :] if ln.strip() else ln.lstrip(" "))
    return Piece(tuple(range(row, row + len(lines))), indent, "".join(out))


def _wanted(piece: str, first_line: str, needles: tuple[str, ...], hint: Callable[[str], bool]) -> bool:
    # class headers and class-level statements are no sites: methods are their own chunks
    return any(nd in piece for nd in needles) and not first_line.lstrip().startswith("class ") and hint(piece)


def _hits(text: str, needles: tuple[str, ...]) -> list[int]:
    found = []
    for needle in needles:
        at = text.find(needle)
        while at >= 0:
            found.append(at)
            at = text.find(needle, at + len(needle))
    return sorted(found)


def chunks(text: str, needles: tuple[str, ...], hint: Callable[[str], bool] = lambda text: True) -> list[Piece] | None:
    """Method- and function-sized pieces of a file that contain one of ``needles``.

    Only the runs around a needle are cut: a run starts at a def/class/decorator line at column 0
    or 4 and ends at the next one, or earlier at the first line less indented than its body (a
    signature's closing bracket and comments do not count). Returns ``None`` when the file cannot
    be cut safely by indentation (see ``chunks_by_ast``).
    """
    hits = _hits(text, needles)
    if not hits:
        return []
    cut = _openers(text)
    if cut is None:
        return None
    starts, indents = cut
    runs = sorted({k for k in (bisect.bisect_right(starts, at) - 1 for at in hits) if k >= 0})
    found: list[Piece] = []
    row, counted = 0, 0
    for k in runs:
        begin, indent = starts[k], indents[k]
        nxt = starts[k + 1] if k + 1 < len(starts) else len(text)
        head = begin
        while text.startswith(" " * indent + "@", head):  # the decorated def is part of the run
            head = text.find("\n", head) + 1 or len(text)
        stop = _STOP[indent].search(text, text.find("\n", head), nxt)
        end = stop.start() + 1 if stop else nxt
        piece = text[begin:end]
        if not _wanted(piece, piece[: piece.find("\n") + 1], needles, hint):
            continue
        row += text.count("\n", counted, begin)
        counted = begin
        cut_piece = _dedented(piece, row, indent)
        if cut_piece is None:
            return None
        found.append(cut_piece)
    return found


def chunks_by_ast(
    text: str, needles: tuple[str, ...], hint: Callable[[str], bool] = lambda text: True
) -> list[Piece] | None:
    """Like ``chunks``, with the function spans from Python's parser (top-level functions and methods).

    ``None`` when Python cannot parse the file or a wanted method cannot be dedented (a string
    literal reaching column 0): the caller then parses the whole file.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines = text.splitlines(keepends=True)
    found: list[Piece] = []
    for fn, indent in _functions(tree):
        start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)]) - 1
        end = fn.end_lineno or fn.lineno
        text_of = "".join(lines[start:end])
        if not _wanted(text_of, lines[start], needles, hint):
            continue
        piece = _dedented(text_of, start, indent)
        if piece is None:
            return None
        found.append(piece)
    return found


def _functions(tree: ast.Module) -> Iterable[tuple[ast.FunctionDef | ast.AsyncFunctionDef, int]]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, 0
        elif isinstance(node, ast.ClassDef):
            for inner in node.body:
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield inner, inner.col_offset


# --- statement slices -----------------------------------------------------------------------------


class _Slicer:
    def __init__(
        self,
        piece: Piece,
        tokens: tuple[str, ...],
        mentions: tuple[str, ...],
        statement: Callable[[str], bool],
        comments: bool,
    ) -> None:
        self.piece = piece
        self.comments = comments
        self.lines = piece.text.splitlines(keepends=True)
        self.tokens = tokens
        self.mentions = mentions
        self.statement = statement
        self.out: list[str] = []
        self.rows: list[int] = []
        self.fake: set[int] = set()

    def emit(self, a: int, b: int) -> None:
        for i in range(a, b):
            self.out.append(self.lines[i])
            self.rows.append(self.piece.rows[i])

    def gap(self, a: int, b: int) -> None:
        """Lines between statements (blank, comments): only kept when the slice is rewritten, where a
        new statement must land on the same side of a comment as in the whole function."""
        for i in range(a, b):
            bare = self.lines[i].strip()
            if self.comments or (bare and not bare.startswith("#")):
                self.emit(i, i + 1)

    def synthetic(self, text: str, at: int) -> int:
        self.fake.add(len(self.out))
        self.out.append(text)
        self.rows.append(self.piece.rows[at])
        return len(self.out) - 1

    def header(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """The signature as one line of names: no rule reads decorators, annotations or defaults."""
        a = fn.args
        names = [x.arg for x in a.posonlyargs] + (["/"] if a.posonlyargs else [])
        names += [x.arg for x in a.args]
        names += [f"*{a.vararg.arg}"] if a.vararg else (["*"] if a.kwonlyargs else [])
        names += [x.arg for x in a.kwonlyargs] + ([f"**{a.kwarg.arg}"] if a.kwarg else [])
        kind = "async def" if isinstance(fn, ast.AsyncFunctionDef) else "def"
        self.synthetic(f"{kind} {fn.name}({', '.join(names)}):\n", fn.lineno - 1)

    def text(self, a: int, b: int) -> str:
        return "".join(self.lines[a:b])

    def block(self, stmts: list[ast.stmt], start: int) -> None:
        """Statements of one block; ``start`` is the first line after the header (gap lines included).

        A run of left-out statements becomes one line: ``pass``, or the first mention word any of
        them holds (``cache_position``), so a rule still sees that the function uses that name.
        """
        prev_end = start
        run: int | None = None  # the placeholder line of the current run of left-out statements
        for unit in _units(stmts):
            first, last = unit[0].lineno - 1, _end(unit[-1])
            seg = self.text(first, last)  # the statement itself: comments above it say nothing
            compound = len(unit) == 1 and isinstance(unit[0], _COMPOUND)
            if not self.relevant(unit, seg, compound):
                said = next((m for m in self.mentions if m in seg), None)
                if run is None:
                    run = self.synthetic(" " * unit[0].col_offset + (said or "pass") + "\n", prev_end)
                elif said and self.out[run].strip() == "pass":
                    self.out[run] = self.out[run].replace("pass", said)
            else:
                run = None
                s = unit[0]
                if len(unit) == 1 and isinstance(s, ast.If) and not _one_line(s, self.lines):
                    self.if_chain(s, prev_end)
                elif len(unit) == 1 and _plain_loop_or_with(s):
                    head_end = s.body[0].lineno - 1  # type: ignore[attr-defined]
                    self.gap(prev_end, first)
                    self.emit(first, head_end)
                    self.block(s.body, head_end)  # type: ignore[attr-defined]
                else:
                    self.gap(prev_end, first)
                    self.emit(first, last)
            prev_end = max(prev_end, last, first)

    def relevant(self, unit: list[ast.stmt], seg: str, compound: bool) -> bool:
        if len(unit) == 1 and _is_docstring(unit[0]):
            return False
        if not any(t in seg for t in self.tokens):
            return False
        return compound or self.statement(seg)

    def if_chain(self, s: ast.If, head_start: int) -> None:
        head_end = s.body[0].lineno - 1
        self.gap(head_start, s.lineno - 1)
        self.emit(s.lineno - 1, head_end)
        self.block(s.body, head_end)
        if not s.orelse:
            return
        after_body = _end(s.body[-1])
        o = s.orelse[0]
        if len(s.orelse) == 1 and isinstance(o, ast.If) and self.lines[o.lineno - 1].lstrip().startswith("elif"):
            self.if_chain(o, after_body)
        else:
            self.gap(after_body, o.lineno - 1)  # the ``else:`` line, with comments around it
            self.block(s.orelse, o.lineno - 1)


def _end(s: ast.stmt) -> int:
    return s.end_lineno or s.lineno


def _units(stmts: list[ast.stmt]) -> list[list[ast.stmt]]:
    """Statements grouped so that statements sharing a line (``a = 1; b = 2``) stay together."""
    units: list[list[ast.stmt]] = []
    for s in stmts:
        if units and s.lineno <= _end(units[-1][-1]):
            units[-1].append(s)
        else:
            units.append([s])
    return units


_COMPOUND = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match,
)  # fmt: skip


def _is_docstring(s: ast.stmt) -> bool:
    return isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)


def _plain_loop_or_with(s: ast.stmt) -> bool:
    """A ``for``/``while``/``with`` without an ``else``, its body below its header: cut inside it too."""
    if isinstance(s, (ast.For, ast.AsyncFor, ast.While)) and not s.orelse:
        return s.body[0].lineno > s.lineno
    if isinstance(s, (ast.With, ast.AsyncWith)):
        return s.body[0].lineno > s.lineno
    return False


def _one_line(s: ast.If, lines: list[str]) -> bool:
    """An ``if``/``elif``/``else`` whose body sits on its header's line: kept whole."""
    if s.body[0].lineno == s.lineno:
        return True
    if not s.orelse:
        return False
    o = s.orelse[0]
    head = lines[o.lineno - 1].lstrip()
    if len(s.orelse) == 1 and isinstance(o, ast.If) and head.startswith("elif"):
        return _one_line(o, lines)
    return head.startswith("else")


def sliced(
    piece: Piece,
    tokens: tuple[str, ...],
    mentions: tuple[str, ...] = (),
    statement: Callable[[str], bool] = lambda text: True,
    comments: bool = True,
) -> Piece:
    """The function in ``piece`` cut down to what a rule reads (see the module doc).

    Kept: the signature (as one line of parameter names), every simple statement holding one of
    ``tokens`` that ``statement`` accepts (docstrings never), and the compound statements around
    them. A run of other statements becomes one line: the first of ``mentions`` it holds, else
    ``pass``. Without ``comments`` (a scan), blank and comment lines between statements go too.
    The piece itself when it cannot be sliced (no single function, one-line bodies, tabs).
    """
    if not tokens or "\t" in piece.text:
        return piece
    cut = _slice_text(piece.text, tokens, mentions, statement, comments)
    if cut is None:
        return piece
    rel, text, fake = cut
    return Piece(tuple(piece.rows[i] for i in rel), piece.indent, text, fake)


@functools.lru_cache(maxsize=1024)
def _slice_text(
    text: str, tokens: tuple[str, ...], mentions: tuple[str, ...], statement: Callable[[str], bool], comments: bool
) -> tuple[tuple[int, ...], str, frozenset[int]] | None:
    """``sliced`` on a function's text alone (rows counted from 0): a modular file and its modeling
    file share most functions, so each is cut once."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    fn = tree.body[0]
    if fn.body[0].lineno == fn.lineno:
        return None
    s = _Slicer(Piece(tuple(range(text.count("\n") + 1)), 0, text), tokens, mentions, statement, comments)
    s.header(fn)
    s.block(fn.body, fn.body[0].lineno - 1)
    s.gap(_end(fn.body[-1]), len(s.lines))  # trailing blank lines and comments
    return tuple(s.rows), "".join(s.out), frozenset(s.fake)


def forget() -> None:
    """Drop what this module cached (files cut, functions sliced): a cold scan starts from nothing."""
    _openers.cache_clear()
    _slice_text.cache_clear()
