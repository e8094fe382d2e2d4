"""Cutting files into the pieces the rules parse: function chunks and statement slices."""

from __future__ import annotations

from ropefix.fix import pieces

FILE = '''import torch


@torch.no_grad()
def helper(x):
    return x.rope_deltas + 1


class Model:
    """A class."""

    @property
    def size(self):
        return 3

    def forward(self, input_ids, cache_position=None, **kwargs):
        """Docs that mention rope_deltas + cache_position."""
        batch = input_ids.shape[0]
        out = self.inner(input_ids, cache_position=cache_position)
        # keep them for decoding
        self.rope_deltas = out.deltas
        if cache_position is not None:
            for step in range(batch):
                out = out + step
            delta = cache_position[0] + self.rope_deltas
        return out, delta
'''


def test_chunks_are_the_functions_around_a_needle_with_their_decorators_and_file_rows() -> None:
    found = pieces.chunks(FILE, ("rope_deltas",))
    assert [p.text.splitlines()[0] for p in found] == [
        "@torch.no_grad()",
        "def forward(self, input_ids, cache_position=None, **kwargs):",
    ]
    forward = found[1]
    lines = FILE.splitlines()
    assert all(lines[row].strip() == text.strip() for row, text in zip(forward.rows, forward.text.splitlines()))
    assert pieces.chunks(FILE, ("no such word",)) == []
    by_ast = pieces.chunks_by_ast(FILE, ("rope_deltas",))  # Python's parser cuts the same functions
    assert [(p.start, p.text.rstrip()) for p in by_ast] == [(p.start, p.text.rstrip()) for p in found]
    assert pieces.chunks("class A:\n  def f(self):\n    return self.rope_deltas\n", ("rope_deltas",)) is None


def test_a_slice_keeps_the_statements_a_rule_reads_and_stands_in_for_the_rest() -> None:
    forward = pieces.chunks(FILE, ("rope_deltas",))[1]
    cut = pieces.sliced(forward, ("delta",), mentions=("cache_position",), comments=False)
    assert cut.text.splitlines() == [
        "def forward(self, input_ids, cache_position, **kwargs):",  # the signature as names
        "    cache_position",  # the docstring, the batch size and the call, which uses cache_position
        "    self.rope_deltas = out.deltas",
        "    if cache_position is not None:",
        "        pass",  # the loop holds no delta
        "        delta = cache_position[0] + self.rope_deltas",
        "    return out, delta",
    ]
    lines = FILE.splitlines()
    real = [(row, text) for k, (row, text) in enumerate(zip(cut.rows, cut.text.splitlines())) if k not in cut.fake]
    assert all(lines[row].strip() == text.strip() for row, text in real)  # every kept line knows its file line
    assert cut.fake == frozenset({0, 1, 4})
    with_comments = pieces.sliced(forward, ("delta",), mentions=("cache_position",), comments=True)
    assert "    # keep them for decoding" in with_comments.text.splitlines()  # a rewrite keeps them in place


def test_a_statement_test_narrows_what_is_kept() -> None:
    forward = pieces.chunks(FILE, ("rope_deltas",))[1]
    cut = pieces.sliced(forward, ("delta",), statement=lambda text: "+" in text, comments=False)
    assert "self.rope_deltas = out.deltas" not in cut.text
    assert "delta = cache_position[0] + self.rope_deltas" in cut.text
