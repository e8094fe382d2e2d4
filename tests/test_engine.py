"""The engine's facade on small synthetic trees: scan, apply, dry-run, check, idempotence, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ropefix.errors import RopefixError
from ropefix.fix import engine
from ropefix.fix.rules import AFFECTED, FIXED, SAFE, UNKNOWN, select
from ropefix.main import main
from ropefix.store import Store

SNIPPETS = Path(__file__).parent / "snippets"


def make_tree(root: Path, layout: str = "repo") -> Path:
    """A transformers-shaped tree: two models with sites (modular + modeling), one without."""
    pkg = root / "src" / "transformers" if layout == "repo" else root / "transformers"
    for model, files in {
        "alpha_vl": {"modular_alpha_vl.py": "store_then_add.py", "modeling_alpha_vl.py": "store_then_add.py"},
        "beta_vl": {"modeling_beta_vl.py": "inner_model_attr.py"},
        "plain": {"modeling_plain.py": None},
    }.items():
        (pkg / "models" / model).mkdir(parents=True)
        for name, snippet in files.items():
            text = (SNIPPETS / snippet).read_text() if snippet else "def forward(x):\n    return x + 1\n"
            (pkg / "models" / model / name).write_text(text)
        (pkg / "models" / model / "configuration_x.py").write_text("rope_deltas = 1 + 2\n")  # not a model file
    (pkg / "__init__.py").write_text("")
    return root if layout == "repo" else pkg


def test_scan_tree_lists_sites_per_model_and_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    report = engine.scan_tree(root)
    assert report.prefix == "src/transformers"
    assert report.files_scanned == 4
    assert {(s.model, Path(s.file).name, s.line, s.status) for s in report.sites} == {
        ("alpha_vl", "modular_alpha_vl.py", 8, AFFECTED),
        ("alpha_vl", "modular_alpha_vl.py", 10, AFFECTED),
        ("alpha_vl", "modeling_alpha_vl.py", 8, AFFECTED),
        ("alpha_vl", "modeling_alpha_vl.py", 10, AFFECTED),
        ("beta_vl", "modeling_beta_vl.py", 15, AFFECTED),
        ("beta_vl", "modeling_beta_vl.py", 17, SAFE),
        ("beta_vl", "modeling_beta_vl.py", 18, AFFECTED),
    }
    none = {"affected": 0, "fixed": 0, "safe": 0, "unknown-shape": 0, "unreadable": 0}
    assert report.models() == {"alpha_vl": {**none, "affected": 4}, "beta_vl": {**none, "affected": 2, "safe": 1}}
    assert [s.model for s in engine.scan_tree(root, models=["beta_vl"]).sites] == ["beta_vl"] * 3


def test_apply_rewrites_modular_and_modeling_alike_then_changes_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    models = root / "src/transformers/models"
    first = engine.apply_tree(root)
    assert first.changed and sorted(Path(c.file).name for c in first.changes) == [
        "modeling_alpha_vl.py", "modeling_beta_vl.py", "modular_alpha_vl.py"]  # fmt: skip
    assert sum(len(c.sites_fixed) for c in first.changes) == 6
    assert (models / "alpha_vl/modular_alpha_vl.py").read_text() == (
        models / "alpha_vl/modeling_alpha_vl.py"
    ).read_text()
    assert engine.scan_tree(root).affected == []
    second = engine.apply_tree(root)
    assert not second.changed and second.summary().startswith("nothing to change")


def test_dry_run_writes_nothing_and_its_diff_applies(tmp_path: Path) -> None:
    import subprocess

    root = make_tree(tmp_path)
    before = {p: p.read_text() for p in root.rglob("*.py")}
    report = engine.apply_tree(root, dry_run=True)
    assert {p: p.read_text() for p in root.rglob("*.py")} == before
    (tmp_path / "fix.patch").write_text(report.diff)
    subprocess.run(["git", "apply", "-p1", str(tmp_path / "fix.patch")], cwd=root, check=True)
    assert engine.scan_tree(root).affected == []


def test_an_installed_package_folder_is_a_root_too(tmp_path: Path) -> None:
    pkg = make_tree(tmp_path, layout="package")
    report = engine.apply_tree(pkg, models=["alpha_vl"])
    assert report.prefix == "" and {c.file for c in report.changes} == {
        "models/alpha_vl/modular_alpha_vl.py", "models/alpha_vl/modeling_alpha_vl.py"}  # fmt: skip
    assert len(engine.scan_tree(pkg).affected) == 2  # beta_vl was left alone


def test_bad_inputs_are_refused_before_anything_changes(tmp_path: Path) -> None:
    with pytest.raises(RopefixError, match="neither a transformers checkout"):
        engine.scan_tree(tmp_path)
    root = make_tree(tmp_path / "t")
    with pytest.raises(RopefixError, match="No model folder nope"):
        engine.apply_tree(root, models=["nope"])
    with pytest.raises(RopefixError, match="Unknown rule"):
        engine.apply_tree(root, rules="rope")
    assert len(engine.scan_tree(root).affected) == 6


def test_unparsable_model_file_is_reported_not_skipped(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "src/transformers/models/plain/modeling_plain.py").write_text("def f(:\n    self.rope_deltas = x\n")
    [site] = engine.scan_tree(root).with_status(engine.UNREADABLE)
    assert (site.model, site.line) == ("plain", 1) and "syntax error" in site.code


CONVERTER_COPIES = """import sys, pathlib
args = sys.argv[2:]
for f in args:
    p = pathlib.Path(f)
    p.with_name(p.name.replace("modular_", "modeling_")).write_text(p.read_text() + EXTRA)
"""


@pytest.mark.parametrize("extra, ok", [('""', True), ('"# drift\\n"', False)])
def test_modular_converter_must_regenerate_the_patched_modeling_file(tmp_path: Path, extra: str, ok: bool) -> None:
    root = make_tree(tmp_path)
    (root / "utils").mkdir()
    (root / "utils/modular_model_converter.py").write_text(f"EXTRA = {extra}\n" + CONVERTER_COPIES + "# --files\n")
    before = {p: p.read_text() for p in (root / "src").rglob("*.py")}
    if ok:
        report = engine.apply_tree(root)
        assert report.modular_checked == ["src/transformers/models/alpha_vl/modular_alpha_vl.py"]
        assert engine.scan_tree(root).affected == []
    else:
        with pytest.raises(RopefixError, match="regenerates .*modeling_alpha_vl.py differently"):
            engine.apply_tree(root)
        assert {p: p.read_text() for p in (root / "src").rglob("*.py")} == before  # rolled back whole


def test_cli_check_fails_with_diff_and_fix_command_then_passes(tmp_path: Path, capsys) -> None:
    root = make_tree(tmp_path)
    assert main(["apply", "--check", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "+            self.rope_deltas = rope_deltas if cache_position is None else" in out
    assert f"ropefix apply {root}" in err
    assert main(["apply", "--dry-run", str(root), "--models", "beta_vl"]) == 0
    assert "modeling_beta_vl.py" in capsys.readouterr().out
    assert main(["apply", str(root)]) == 0
    assert "fixed 6 site(s) in 3 file(s)" in capsys.readouterr().out
    assert main(["apply", str(root)]) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert main(["apply", "--check", str(root)]) == 0


def test_cli_scan_text_and_json(tmp_path: Path, capsys) -> None:
    root = make_tree(tmp_path)
    assert main(["scan", str(root)]) == 0
    out = capsys.readouterr().out
    assert "6 affected, 0 fixed, 1 safe, 0 unknown-shape, 0 unreadable site(s) in 3 of 4 model file(s)" in out
    assert "because a Python int cache length: no second device" in out  # every site says why
    assert main(["scan", str(root), "--json", "--models", "alpha_vl"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {s["status"] for s in data["sites"]} == {"affected"} and len(data["sites"]) == 4
    for models in (["alpha_vl", "beta_vl"], ["alpha_vl,beta_vl"]):  # the one grammar: spaces, commas accepted
        assert main(["scan", str(root), "--json", "--models", *models]) == 0
        assert len(json.loads(capsys.readouterr().out)["sites"]) == 7
    assert main(["scan"]) == 1  # neither PATH nor --versions


# --- property: apply is idempotent on generated variants of the shapes -------------------------

STORED = st.sampled_from(["self.rope_deltas", "self.model.rope_deltas"])
GUARD = st.sampled_from(["ifexp", "if-block", "none"])
EXTRA_PARAMS = st.lists(st.sampled_from(["input_ids", "inputs_embeds", "attention_mask"]), unique=True, max_size=3)


def variant(
    stored: str, guard: str, params: list[str], in_class: bool, comment: bool, blank: bool, naive: bool, wrap: bool
) -> str:
    add = f"cache_position[0] + {stored}"
    if wrap:
        add = f"({add}).to(inputs_embeds.device)"
    value = "rope_deltas.to(cache_position.device)" if naive else "rope_deltas"
    if guard == "ifexp":
        combine = f"delta = {add} if cache_position is not None else 0"
    elif guard == "if-block":
        combine = f"if cache_position is not None:\n    delta = {add}\nelse:\n    delta = 0"
    else:
        combine = f"delta = {add}"
    body = [
        "if cache_position is None or " + stored + " is None:",
        "    rope_deltas = compute()",
        *(["    # keep them for decoding"] if comment else []),
        f"    {stored} = {value}",
        "    return None",
        *([""] if blank else []),
        *combine.splitlines(),
        "return delta",
    ]
    sig = ", ".join([*(["self"] if in_class else []), *params, "cache_position=None"])
    fn = [f"def step({sig}):", *("    " + ln if ln else "" for ln in body)]
    if in_class:
        return "class M:\n" + "\n".join("    " + ln if ln else "" for ln in fn) + "\n"
    return "\n".join(fn) + "\n"


@given(STORED, GUARD, EXTRA_PARAMS, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_apply_is_idempotent_on_generated_variants(
    stored, guard, params, in_class, comment, blank, naive, wrap
) -> None:
    text = variant(stored, guard, params, in_class, comment, blank, naive, wrap)
    rules = select(None)
    before = [(f.shape, f.status) for _, f in engine.rewrite(text, rules, fix=False).findings]
    store = "store-naive-to" if naive else "store-unaligned"
    assert before == [(store, AFFECTED), ("combine-cache-position", AFFECTED)]
    once = engine.rewrite(text, rules, fix=True).text
    engine.check_text("variant.py", once, rules)  # compiles, nothing affected, every move guarded
    assert engine.rewrite(once, rules, fix=True).text == once
    # one line per site unless upstream's 119 columns force ruff to wrap the statement
    assert max(len(ln) for ln in once.splitlines()) <= 119
    if all(len(ln) < 100 for ln in once.splitlines()):
        assert len(once.splitlines()) == len(text.splitlines())


def test_scan_memo_answers_like_a_fresh_parse_and_follows_edits(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    store = Store(tmp_path / "cache")  # the memo belongs to the store the caller passes down
    fresh = engine.scan_tree(root, memo=False)
    assert engine.scan_tree(root, store=store) == fresh  # fills the memo in that cache
    (saved,) = (tmp_path / "cache").glob("results/scan-memo-*.json")
    assert engine.scan_memo(store) is engine.scan_memo(Store(tmp_path / "cache"))  # one memo per cache folder
    saved.write_text("{}")  # another process's view: this process answers from the memo it holds
    assert engine.scan_tree(root, store=store) == fresh
    engine.apply_tree(root, models=["beta_vl"], store=store)  # edited files hash differently: no stale answer
    assert {s.status for s in engine.scan_tree(root, models=["beta_vl"], store=store).sites} == {FIXED, SAFE}


def test_a_cache_that_cannot_be_used_costs_the_memo_not_the_scan(tmp_path: Path, monkeypatch) -> None:
    root = make_tree(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache should be\n")
    monkeypatch.setenv("ROPEFIX_CACHE", str(blocker))
    assert engine.scan_memo(None) is None
    assert engine.scan_tree(root) == engine.scan_tree(root, memo=False)
    assert engine.apply_tree(root, dry_run=True).changed
    assert blocker.read_text() == "a file where the cache should be\n"


def test_cli_scan_versions_prints_a_row_per_release_and_model_and_a_column_per_rule(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from ropefix.releases import sources

    old, new = make_tree(tmp_path / "old"), make_tree(tmp_path / "new")
    engine.apply_tree(new, models=["alpha_vl"])
    long = new / "src/transformers/models/a_model_with_a_long_name_vl"
    long.mkdir()
    (long / "modeling_a_model_with_a_long_name_vl.py").write_text((SNIPPETS / "int_offset_only.py").read_text())
    trees = {"1.0.0": old, "2.0.0": new}
    monkeypatch.setattr(sources, "resolve", lambda spec, *a, **k: sorted(trees))
    monkeypatch.setattr(sources, "release_tree", lambda v, *a, **k: trees[v])
    assert main(["scan", "--versions", "1-latest"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["release", "model", "rope-deltas", "causal-mask", "rope-index-scatter"]
    assert [ln.split() for ln in lines[1:6]] == [
        ["1.0.0", "alpha_vl", "A4", "-", "-"],
        ["beta_vl", "A2", "-", "-"],
        ["2.0.0", "a_model_with_a_long_name_vl", "safe", "-", "-"],  # full names, no cut
        ["alpha_vl", "fixed", "-", "-"],
        ["beta_vl", "A2", "-", "-"],
    ]
    assert any(ln.startswith("A<n>: n sites the rule rewrites") for ln in lines)  # the legend
    assert lines[-1] == (
        "latest release scanned, 2.0.0: NOT safe: rope-deltas affected in beta_vl (causal-mask, rope-index-scatter: safe)"
    )
    assert main(["scan", "--versions", "1-latest", "--rules", "rope-deltas", "--models", "alpha_vl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["release", "model", "rope-deltas"]
    assert lines[-1] == "latest release scanned, 2.0.0: safe (no affected, unknown-shape or unreadable site)"
    assert main(["scan", "--versions", "1-latest", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(data) == ["1.0.0", "2.0.0"] and len(data["2.0.0"]["sites"]) == 9


def test_apply_and_patches_take_their_arguments_from_the_shared_helper() -> None:
    """No command imports another command's module (issue 13)."""
    import ast

    commands = Path(engine.__file__).parents[1] / "commands"
    for path in commands.glob("*.py"):
        imported = {
            f"{n.module}.{a.name}" if n.module == "ropefix.commands" else n.module
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("ropefix.commands")
            for a in n.names
        }
        assert imported <= {"ropefix.commands._args"}, path.name


# -- files that do not decode or parse ----------------------------------------------------------------

LATIN1 = b"# caf\xe9\nclass A:\n    def forward(self, cache_position=None):\n        self.rope_deltas = 1\n"
BROKEN_TAIL = "\n\ndef broken(:\n    pass\n"  # outside every chunk the rules read
BROKEN_STORE = ("            self.rope_deltas = rope_deltas\n", "            self.rope_deltas = rope_deltas +\n")


@pytest.mark.parametrize(
    "damage, why, scan_sees",
    [("latin-1", "UTF-8", True), ("syntax where a rule reads", "syntax", True), ("syntax elsewhere", "syntax", False)],
)
def test_a_file_that_does_not_decode_or_parse_is_unreadable_and_apply_writes_nothing(
    tmp_path: Path, damage: str, why: str, scan_sees: bool, capsys
) -> None:
    root = make_tree(tmp_path)
    bad = root / "src/transformers/models/alpha_vl/modeling_alpha_vl.py"
    text = bad.read_text()
    if damage == "latin-1":
        bad.write_bytes(LATIN1 + bad.read_bytes())
        line = 1
    elif damage == "syntax where a rule reads":
        line = text.splitlines(keepends=True).index(BROKEN_STORE[0]) + 1
        bad.write_text(text.replace(*BROKEN_STORE))
    else:
        line = len(text.splitlines()) + 3  # the `def broken(:` line
        bad.write_text(text + BROKEN_TAIL)
    report = engine.scan_tree(root)
    if scan_sees:
        [site] = report.with_status(engine.UNREADABLE)
        assert (site.file, site.line) == ("src/transformers/models/alpha_vl/modeling_alpha_vl.py", line)
        assert why in site.code
        assert len(report.affected) == 4  # the readable files are still scanned
        assert main(["scan", str(root)]) == 1
        out = capsys.readouterr().out
        assert f"{line:>6}  unreadable" in out and "1 unreadable" in out
    else:  # the scan parses only what the rules read (a full parse costs several scans): apply finds it
        assert report.with_status(engine.UNREADABLE) == [] and len(report.affected) == 6
    before = {p: p.read_bytes() for p in root.rglob("*.py")}
    with pytest.raises(RopefixError) as e:
        engine.apply_tree(root)
    assert f"modeling_alpha_vl.py line {line}" in str(e.value) and "Nothing was written" in str(e.value)
    assert "bug" not in str(e.value)
    assert main(["apply", str(root)]) == 1
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == before


# --- judged per model folder ---------------------------------------------------------------------

STORE_ONLY = """class Model:
    def forward(self, input_ids, cache_position=None):
        rope_deltas = input_ids[:, :1] * 0
        self.rope_deltas = rope_deltas
"""


def test_a_store_is_judged_with_the_rest_of_its_model(tmp_path: Path) -> None:
    """The store alone is safe; a sibling file of the same model that adds the deltas to cache_position
    makes it affected (a modular file inherits the addition its generated modeling file spells out)."""
    root = make_tree(tmp_path)
    folder = root / "src/transformers/models/gamma_vl"
    folder.mkdir()
    (folder / "modular_gamma_vl.py").write_text(STORE_ONLY)
    alone = engine.scan_tree(root, models=["gamma_vl"]).sites
    assert [(s.shape, s.status, s.reason) for s in alone] == [
        ("store-unaligned", SAFE, "the stored deltas are never added in this model")
    ]
    assert not engine.apply_tree(root, models=["gamma_vl"]).changed
    (folder / "modeling_gamma_vl.py").write_text((SNIPPETS / "store_then_add.py").read_text())
    judged = {(Path(s.file).name, s.shape): s.status for s in engine.scan_tree(root, models=["gamma_vl"]).sites}
    assert judged[("modular_gamma_vl.py", "store-unaligned")] == AFFECTED
    report = engine.apply_tree(root, models=["gamma_vl"])
    assert {Path(c.file).name for c in report.changes} == {"modular_gamma_vl.py", "modeling_gamma_vl.py"}
    assert engine.scan_tree(root, models=["gamma_vl"]).affected == []


def test_apply_takes_rules_per_model(tmp_path: Path) -> None:
    """A caller gives each family the rules proven for it: one call per model, each with its rules."""
    root = make_tree(tmp_path)
    folder = root / "src/transformers/models/delta_vl"
    folder.mkdir()
    (folder / "modeling_delta_vl.py").write_text((SNIPPETS / "causal_mask.py").read_text())
    first = engine.apply_tree(root, models=["alpha_vl"], rules=["rope-deltas"])
    second = engine.apply_tree(root, models=["delta_vl"], rules=["causal-mask"])
    assert {Path(c.file).parent.name for c in first.changes} == {"alpha_vl"}
    assert {Path(c.file).parent.name for c in second.changes} == {"delta_vl"}
    left = {(s.model, s.rule) for s in engine.scan_tree(root).affected}
    assert left == {("beta_vl", "rope-deltas")}  # the model no call named keeps its sites


def test_every_site_has_a_reason_in_json(tmp_path: Path, capsys) -> None:
    root = make_tree(tmp_path)
    assert main(["scan", str(root), "--json"]) == 0
    sites = json.loads(capsys.readouterr().out)["sites"]
    assert sites and all(s["reason"] for s in sites)
    assert {s["status"] for s in sites} <= {AFFECTED, FIXED, SAFE, UNKNOWN}
