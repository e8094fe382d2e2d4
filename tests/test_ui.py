from __future__ import annotations

import io

import pytest

from ropefix import ui


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


def test_each_progress_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # two worker threads reporting at once (the matrix, the sweep) joined lines when text and newline went apart
    err = _Writes()
    monkeypatch.setattr("sys.stderr", err)
    ui.info("tf446-torch213: latent")
    assert err.calls == ["tf446-torch213: latent\n"]


def test_progress_names_items(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Writes()
    monkeypatch.setattr("sys.stderr", err)
    got = list(ui.progress([{"release": "4.49.0", "files": ["x"]}], "check", name=lambda e: e["release"]))
    assert got == [{"release": "4.49.0", "files": ["x"]}]
    assert err.getvalue().startswith("[1/1] check: 4.49.0 (") and "files" not in err.getvalue()
