"""Cut a file into the small pieces the rules need to parse: functions, then statements.

Parsing with libcst costs about 10 us per byte and a release holds megabytes of model code, while
a site needs only its function, and of that function only the statements that mention what the
rule is about. So a file is cut twice, both times without libcst:

1. ``chunks``: method- and function-sized pieces found by indentation (regexes over the text, no
   parsing), kept only when they hold a rule's needle and pass its hint. ``chunks_by_ast`` does
   the same from Python's own (C) parser for files the indentation cut cannot handle.
2. ``sliced``: inside one function, Python's ``ast`` gives every statement's lines; statements that
   hold none of the rule's context words are left out, each run of them replaced by one ``pass``
   line, so the compound statements around a site (its guards), the signature and the order of
   what is kept stay as they are. ``pass`` keeps apart what was apart: two kept statements are
   neighbours in the slice only when they are in the file.

A piece remembers, for each of its lines, the file line it came from (``rows``), so findings get
file line numbers and rewritten lines go back where they came from.
"""

from __future__ import annotations

import ast
import bisect
import functools
import itertools
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


_STOP = {0: re.compile(r"^[^\s)\]}#]", re.MULTILINE), 4: re.compile(r"^ {0,3}[^\s)\]}#]", re.MULTILINE)}
# A line that opens a chunk: a decorator or a def/class at column 0, or a method at 4 spaces.
_OPENERS = re.compile(r"^( {0,4})(?:@|def |async def |class )", re.MULTILINE)


@functools.lru_cache(maxsize=4)
def _spans(text: str) -> tuple[list[str], list[int], list[tuple[int, int, int]]] | None:
    """The file's lines, their offsets, and (first, end, indent) of every def/class/decorator run.

    Cached: every rule asks about the same file. Regexes over the whole text find the openers and
    the statements less indented than a body (a signature's closing bracket and comments do not
    count), so no Python loop runs per line.
    """
    lines = text.splitlines(keepends=True)
    offsets = [0, *itertools.accumulate(len(ln) for ln in lines)]

    def line_of(at: int) -> int:
        return bisect.bisect_right(offsets, at) - 1

    openers: list[tuple[int, int]] = []
    for m in _OPENERS.finditer(text):
        i, indent = line_of(m.start()), len(m.group(1))
        if indent not in (0, 4):
            return None
        prev = lines[i - 1] if i else ""
        if prev.startswith(" " * indent + "@") and not prev.startswith(" " * (indent + 1)):
            continue  # a def under a one-line decorator belongs to the decorator's chunk
        openers.append((i, indent))
    stops = {k: [line_of(m.start()) for m in rx.finditer(text)] for k, rx in _STOP.items()}
    spans = []
    for n, (first, indent) in enumerate(openers):
        stop = openers[n + 1][0] if n + 1 < len(openers) else len(lines)
        after = stops[indent]
        k = bisect.bisect_right(after, first)
        end = min(stop, after[k]) if k < len(after) else stop
        spans.append((first, end, indent))
    return lines, offsets, spans


def _dedented(lines: list[str], start: int, end: int, indent: int) -> Piece | None:
    out = []
    for ln in lines[start:end]:
        lead = len(ln) - len(ln.lstrip(" "))
        if ln.strip() and lead < indent and not ln.lstrip().startswith("#"):
            return None
        out.append(ln[min(lead, indent) :] if ln.strip() else ln.lstrip(" "))
    return Piece(tuple(range(start, end)), indent, "".join(out))


def _wanted(piece: str, first_line: str, needles: tuple[str, ...], hint: Callable[[str], bool]) -> bool:
    # class headers and class-level statements are no sites: methods are their own chunks
    return any(nd in piece for nd in needles) and not first_line.lstrip().startswith("class ") and hint(piece)


def chunks(text: str, needles: tuple[str, ...], hint: Callable[[str], bool] = lambda text: True) -> list[Piece] | None:
    """Method- and function-sized pieces of a file that contain one of ``needles``.

    Returns ``None`` when the file cannot be cut safely by indentation (see ``chunks_by_ast``).
    """
    cut = _spans(text)
    if cut is None:
        return None
    lines, offsets, spans = cut
    found: list[Piece] = []
    for start, end, indent in spans:
        if not _wanted(text[offsets[start] : offsets[end]], lines[start], needles, hint):
            continue
        piece = _dedented(lines, start, end, indent)
        if piece is None:
            return None
        found.append(piece)
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
        if not _wanted("".join(lines[start:end]), lines[start], needles, hint):
            continue
        piece = _dedented(lines, start, end, indent)
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
    def __init__(self, piece: Piece, tokens: tuple[str, ...]) -> None:
        self.piece = piece
        self.lines = piece.text.splitlines(keepends=True)
        self.tokens = tokens
        self.out: list[str] = []
        self.rows: list[int] = []
        self.fake: set[int] = set()

    def emit(self, a: int, b: int) -> None:
        for i in range(a, b):
            self.out.append(self.lines[i])
            self.rows.append(self.piece.rows[i])

    def placeholder(self, col: int, at: int) -> None:
        self.fake.add(len(self.out))
        self.out.append(" " * col + "pass\n")
        self.rows.append(self.piece.rows[at])

    def relevant(self, a: int, b: int) -> bool:
        seg = "".join(self.lines[a:b])
        return any(t in seg for t in self.tokens)

    def block(self, stmts: list[ast.stmt], start: int) -> None:
        """Statements of one block; ``start`` is the first line after the header (gap lines included)."""
        prev_end = start
        dropping = False
        for unit in _units(stmts):
            first, last = unit[0].lineno - 1, _end(unit[-1])
            if not self.relevant(prev_end, last):
                if not dropping:
                    self.placeholder(unit[0].col_offset, prev_end)
                dropping = True
            else:
                dropping = False
                s = unit[0]
                if len(unit) == 1 and isinstance(s, ast.If) and not _one_line(s, self.lines):
                    self.if_chain(s, prev_end)
                else:
                    self.emit(prev_end, last)
            prev_end = max(prev_end, last, first)

    def if_chain(self, s: ast.If, head_start: int) -> None:
        head_end = s.body[0].lineno - 1
        self.emit(head_start, head_end)
        self.block(s.body, head_end)
        if not s.orelse:
            return
        after_body = _end(s.body[-1])
        o = s.orelse[0]
        if len(s.orelse) == 1 and isinstance(o, ast.If) and self.lines[o.lineno - 1].lstrip().startswith("elif"):
            self.if_chain(o, after_body)
        else:
            self.emit(after_body, o.lineno - 1)  # the ``else:`` line and comments
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


def sliced(piece: Piece, tokens: tuple[str, ...]) -> Piece:
    """The function in ``piece`` with only the statements holding one of ``tokens`` (see the module doc).

    The piece itself when it cannot be sliced (no single function, one-line bodies, tabs) or when
    slicing leaves nothing out.
    """
    if not tokens or "\t" in piece.text:
        return piece
    try:
        tree = ast.parse(piece.text)
    except (SyntaxError, ValueError):
        return piece
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return piece
    fn = tree.body[0]
    if fn.body[0].lineno == fn.lineno:
        return piece
    s = _Slicer(piece, tokens)
    head_end = fn.body[0].lineno - 1
    s.emit(0, head_end)
    s.block(fn.body, head_end)
    tail = len(s.lines)
    s.emit(_end(fn.body[-1]) if fn.body else head_end, tail)  # trailing blank lines and comments
    if not s.fake:
        return piece
    return Piece(tuple(s.rows), piece.indent, "".join(s.out), frozenset(s.fake))
