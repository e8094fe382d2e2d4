"""backport --wheel: the release's own wheel with its proven patch, under a local version, byte-reproducible.

Fast tests build from a synthetic release (sdist and wheel on a ``file://`` index, so nothing leaves
the machine); the slow one builds 4.49.0 from PyPI, installs it with pip into a fresh virtualenv and
replays the committed verdict's failing layouts there: red on the plain release, green on the wheel.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from packaging.version import Version
from upstream import QWEN_MODEL, sdist_bytes
from verdict_fixtures import report

import ropefix
from ropefix.errors import RopefixError
from ropefix.main import main
from ropefix.prove import verdicts
from ropefix.prove.verdict import State
from ropefix.releases import index
from ropefix.ship import wheel
from ropefix.ship.install import FileChange, Patch
from ropefix.store import Store

V = "1.0.0"  # the synthetic release
MODEL = "transformers/models/qwen2_vl/modeling_qwen2_vl.py"
NAME = re.compile(r"transformers-1\.0\.0\+ropefix\.[0-9a-f]{8}-py3-none-any\.whl")


def release_files(version: str) -> dict[str, str]:
    return {
        "transformers/__init__.py": f'__version__ = "{version}"\n',
        "transformers/models/__init__.py": "",
        MODEL: QWEN_MODEL,
        "transformers/models/bert/modeling_bert.py": "class Bert:\n    pass\n",
    }


def release_wheel(version: str, files: dict[str, str] | None = None) -> bytes:
    """A wheel laid out as transformers' own (dist-info with METADATA, WHEEL, RECORD), made for these tests."""
    files = dict(files or release_files(version))
    info = f"transformers-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: transformers\nVersion: {version}\nSummary: synthetic\n"
        "Requires-Python: >=3.9\nDescription-Content-Type: text/markdown\n\n# the release's own description\n"
    )
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"
    files[f"{info}/top_level.txt"] = "transformers\n"
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


class FileIndex:
    """A PyPI-style JSON API in a folder (``file://``): ``pypi/transformers/json`` and ``packages/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases: dict[str, list[dict]] = {}
        (root / "packages").mkdir(parents=True)
        self.url = (root / "pypi").as_uri()

    def add(self, filename: str, data: bytes, kind: str, sha256: str | None = None) -> None:
        (self.root / "packages" / filename).write_bytes(data)
        version = filename.removeprefix("transformers-").split("-")[0].removesuffix(".tar.gz")
        self.releases.setdefault(version, []).append(
            {
                "filename": filename,
                "packagetype": kind,
                "url": f"../../packages/{filename}",  # relative, like PyPI's
                "digests": {"sha256": sha256 or hashlib.sha256(data).hexdigest()},
                "size": len(data),
                "yanked": False,
            }
        )
        self.write()

    def write(self) -> None:
        doc = self.root / "pypi" / "transformers" / "json"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(json.dumps({"info": {"name": "transformers"}, "releases": self.releases}))


@pytest.fixture
def idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileIndex:
    found = FileIndex(tmp_path / "index")
    found.add(f"transformers-{V}.tar.gz", sdist_bytes(V), "sdist")
    found.add(f"transformers-{V}-py3-none-any.whl", release_wheel(V), "bdist_wheel")
    monkeypatch.setenv(index.ENV_VAR, found.url)
    # the verdict verify would give: qwen2_vl's rope-deltas reproduced on the unpatched release, green patched
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: report(State.REPRODUCED_FIXED, release))
    return found


def _built(out: Path) -> Path:
    found = sorted(out.glob("*.whl"))
    assert len(found) == 1 and NAME.fullmatch(found[0].name), found
    return found[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_the_wheel_is_the_release_plus_the_proven_patch(
    idx: FileIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    path = _built(tmp_path / "a")
    version = path.name.split("-")[1]
    assert str(Version(version)) == version and Version(version).public == V  # canonical PEP 440, local segment
    assert f"transformers=={version}" in printed  # the requirements / constraints line
    assert f"pip install --find-links {path.parent.resolve()} transformers=={version}" in printed
    assert f"--hash=sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}" in printed

    source = zipfile.ZipFile(io.BytesIO(release_wheel(V)))
    z = zipfile.ZipFile(path)
    info = f"transformers-{version}.dist-info"
    names = z.namelist()
    assert names[-1] == f"{info}/RECORD"
    package = [n for n in names if not n.startswith(info)]
    assert names[: len(package)] == package == sorted(package)  # the package first, sorted; then the dist-info
    assert not any(n.startswith(f"transformers-{V}.dist-info") for n in names)  # renamed
    # every file but the patched one and the version line is the release's, byte for byte
    for name in release_files(V):
        if name not in (MODEL, "transformers/__init__.py"):
            assert z.read(name) == source.read(name)
    assert b"self.rope_deltas.to(cache_position.device)" in z.read(MODEL)
    assert z.read("transformers/__init__.py") == f'__version__ = "{version}"\n'.encode()
    meta = z.read(f"{info}/METADATA").decode()
    assert f"\nVersion: {version}\n" in meta and meta.endswith("# the release's own description\n")
    why = meta.split("\n\n", 1)[1]
    assert "qwen2_vl: rope-deltas" in why and "failed at transformers/models/qwen2_vl/modeling_qwen2_vl.py:1724" in why
    assert "vision-apart on 2 accelerator(s)" in why and f"built by ropefix {ropefix.__version__}" in why
    assert "torch 2.13.0+cpu, ropefix 0.0.0 (profile ci): reproduced-fixed" in why  # the verdict's kit
    prov = json.loads(z.read(f"{info}/ropefix.json"))
    assert prov["plan"] == {"qwen2_vl": ["rope-deltas"]} and prov["local"] == version.split("+")[1]
    assert prov["files"][MODEL]["patched"] == hashlib.sha256(z.read(MODEL)).hexdigest()
    # RECORD: every other entry once, with its real sha256 and size; itself last, blank
    rows = list(csv.reader(io.StringIO(z.read(f"{info}/RECORD").decode())))
    assert [r[0] for r in rows] == names and rows[-1] == [f"{info}/RECORD", "", ""]
    for name, digest, size in rows[:-1]:
        assert digest == f"sha256={_b64(z.read(name))}" and int(size) == len(z.read(name))
    # fixed timestamps and permissions: nothing of the build machine's clock or umask
    assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in z.infolist()} == {0o100644}

    # the same inputs give the same bytes; building into a folder that holds them changes nothing
    assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "b")]) == 0
    assert _built(tmp_path / "b").read_bytes() == path.read_bytes()
    capsys.readouterr()
    assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.startswith(f"unchanged {path}")


def _inputs() -> tuple[bytes, Patch]:
    original = QWEN_MODEL.encode()
    patched = original.replace(b"self.rope_deltas\n", b"self.rope_deltas.to(cache_position.device)\n")
    return release_wheel(V), Patch(
        V, ("rope-deltas",), (FileChange(MODEL, original, patched),), {"qwen2_vl": ["rope-deltas"]}
    )


def test_the_local_segment_changes_with_the_patch_and_only_then(tmp_path: Path) -> None:
    source, patch = _inputs()
    proof = report(State.REPRODUCED_FIXED, V)
    first = wheel.build("w.whl", source, patch, proof)
    assert wheel.build("w.whl", source, patch, proof).data == first.data
    other = FileChange(MODEL, patch.changes[0].original, patch.changes[0].patched + b"# another fix\n")
    second = wheel.build("w.whl", source, replace(patch, changes=(other,)), proof)
    assert second.provenance.local != first.provenance.local and second.filename != first.filename
    # the same patch with another proof line (the wheel's METADATA and ropefix.json differ): another name too
    proof2 = report(State.REPRODUCED_FIXED, V, torch="2.6.0")
    third = wheel.build("w.whl", source, patch, proof2)
    assert third.provenance.local not in (first.provenance.local, second.provenance.local)


def test_the_local_segment_is_kept_as_written_by_pep_440() -> None:
    # an all-digit window with a leading zero would be normalised ("01234567" -> "1234567"): it is skipped
    assert wheel.local_from_digest("0123456789" + "ab" * 27) == "ropefix.12345678"
    assert wheel.local_from_digest("00000000a" + "0" * 55) == "ropefix.0000000a"
    assert wheel.local_from_digest("3f9a0c1d" + "0" * 56) == "ropefix.3f9a0c1d"
    for digest in ("0123456789" + "ab" * 27, "00000000a" + "0" * 55, "98765432" + "0" * 56):
        version = f"{V}+{wheel.local_from_digest(digest)}"
        assert str(Version(version)) == version


def test_a_wheel_that_differs_from_the_patched_tree_is_refused(tmp_path: Path) -> None:
    source, patch = _inputs()
    files = release_files(V)
    files[MODEL] += "# edited after the release\n"
    with pytest.raises(RopefixError, match="differently from the release tree"):
        wheel.build("w.whl", release_wheel(V, files), patch, report(State.REPRODUCED_FIXED, V))
    with pytest.raises(RopefixError, match="unproven static one"):
        wheel.build("w.whl", source, replace(patch, plan=None), report(State.REPRODUCED_FIXED, V))


@pytest.mark.parametrize(("state", "message"), [(State.LATENT, "proves nothing"), (State.NOT_JUDGED, "not-judged")])
def test_a_release_the_verdicts_do_not_prove_is_refused(
    state: State, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(index.ENV_VAR, "http://127.0.0.1:9/pypi")  # nothing may be fetched before the gate
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: report(state, release))
    for force in ([], ["--force"]):  # --force replaces an output file; it never bypasses the proof
        assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "out"), *force]) == 1
        err = capsys.readouterr().err
        assert f"Refusing to backport transformers {V}" in err and message in err
        assert "a wheel is never unproven" in err
    assert not (tmp_path / "out").exists()


def test_an_index_wheel_whose_hash_does_not_match_is_refused(
    idx: FileIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx.releases[V] = []
    idx.add(f"transformers-{V}.tar.gz", sdist_bytes(V), "sdist")
    idx.add(f"transformers-{V}-py3-none-any.whl", release_wheel(V), "bdist_wheel", sha256="0" * 64)
    assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "out")]) == 1
    assert "does not match the index's sha256" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not list(Store().path("downloads").glob("*.whl*"))  # no partial or unverified file kept


def test_a_different_wheel_of_the_same_name_needs_force(
    idx: FileIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["backport", "--to", V, "--wheel", "--out", str(out)]) == 0
    path = _built(out)
    good = path.read_bytes()
    path.write_bytes(good + b"someone else's bytes")
    capsys.readouterr()
    assert main(["backport", "--to", V, "--wheel", "--out", str(out)]) == 1
    assert "already exists and differs from this build" in capsys.readouterr().err
    assert path.read_bytes() == good + b"someone else's bytes"  # untouched
    assert main(["backport", "--to", V, "--wheel", "--out", str(out), "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"replaced {path}")
    assert path.read_bytes() == good and sorted(p.name for p in out.iterdir()) == [path.name]


def test_a_release_without_a_pure_python_wheel_is_named(
    idx: FileIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx.add("transformers-1.1.0.tar.gz", sdist_bytes("1.1.0"), "sdist")
    idx.add("transformers-1.1.0-cp311-cp311-manylinux_2_28_x86_64.whl", b"binary", "bdist_wheel")
    assert main(["backport", "--to", "1.1.0", "--wheel", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no pure-Python wheel for transformers 1.1.0" in err and "transformers-1.1.0-py3-none-any.whl" in err
    assert "transformers-1.1.0-cp311-cp311-manylinux_2_28_x86_64.whl" in err  # what it does list
    assert not (tmp_path / "out").exists()


def test_names_from_the_index_never_leave_the_cache(idx: FileIndex, tmp_path: Path) -> None:
    # a hostile index lists a wheel whose name climbs out of downloads/: it is not the release's wheel
    idx.add("transformers-2.0.0.tar.gz", sdist_bytes("2.0.0"), "sdist")
    climbing = {"filename": "../../transformers-2.0.0-py3-none-any.whl", "packagetype": "bdist_wheel"}
    idx.releases["2.0.0"].append({**idx.releases["2.0.0"][0], **climbing})
    idx.write()
    with pytest.raises(RopefixError, match="no pure-Python wheel"):
        index.download_wheel("2.0.0")
    with pytest.raises(RopefixError, match="not a version"):
        index.download_wheel("../2.0.0")
    with pytest.raises(RopefixError, match="not a release name"):  # parses, but is not spelled as the index does
        index.download_wheel("v2.0.0")
    store = Store()
    assert not list(store.path("downloads").iterdir()) and not list(store.root.parent.glob("*.whl"))


def test_status_recognises_an_installed_ropefix_wheel(
    idx: FileIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backport", "--to", V, "--wheel", "--out", str(tmp_path / "out")]) == 0
    built = _built(tmp_path / "out")
    version = built.name.split("-")[1]
    site = _venv(tmp_path / "venv")
    _pip(tmp_path / "venv", "install", "--no-deps", "--no-index", "--no-compile", str(built))
    capsys.readouterr()
    assert main(["backport", "--status", "--site", str(site)]) == 0
    out = capsys.readouterr().out
    assert f"patched    {MODEL}" in out and f"transformers {version} in {site}: patched" in out
    assert f"a ropefix wheel of transformers {V}: qwen2_vl: rope-deltas; built by ropefix {ropefix.__version__}" in out
    assert main(["backport", "--install", "--to", V, "--site", str(site)]) == 0  # nothing to do
    assert "the wheel already carries the fix" in capsys.readouterr().out
    assert main(["backport", "--revert", "--site", str(site)]) == 1
    assert f"pip install --force-reinstall --no-deps transformers=={V}" in capsys.readouterr().err
    (site / MODEL).write_text("# someone's edit\n")
    assert main(["backport", "--status", "--site", str(site)]) == 1
    assert f"modified   {MODEL}" in capsys.readouterr().out


# ---------------------------------------------------------------- the real release, end to end

REAL = "4.49.0"  # CI's release: its committed verdict proves the fix (src/ropefix/data/verdicts/)
# ROPEFIX_WHEELS=all: every release whose committed verdict proves a fix (a minute or two each)
EVERY_WHEEL = os.environ.get("ROPEFIX_WHEELS") == "all"
WHEEL_RELEASES = [r.release for r in verdicts.all_committed() if r.ship_plan()[0]] if EVERY_WHEEL else [REAL]


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", where], check=True)
    return Path(
        subprocess.run(
            [where / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )


def _clean_env() -> dict[str, str]:
    """This process's environment without PYTHONPATH (a test run may point it at the kit's sources)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _pip(env: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", env / "bin" / "python", *args],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _replay(env: Path, kit: Path, replay: Path, model: str = "qwen2_vl") -> tuple[str, list[dict | None]]:
    """The failing layouts replayed by the regression suite in ``env`` (the kit beside it, not installed)."""
    done = subprocess.run(
        [env / "bin" / "python", "-m", "ropefix.prove.suite", "--model", model, "--replay", replay]
        + ["--max-examples", "1"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(kit), "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)
    assert "error" not in result, result
    return result["transformers"], [r["failure"] for r in result["replays"]]


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("real", WHEEL_RELEASES)
def test_the_wheel_installs_with_pip_and_turns_the_proofs_green(
    real: str,
    shared_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ROPEFIX_CACHE", str(shared_store.root))  # the release tree and wheel, downloaded once
    monkeypatch.setattr(verdicts, "lookup", lambda release, store=None: verdicts.committed(release))
    proven = verdicts.committed(real)
    start = time.monotonic()
    assert main(["backport", "--to", real, "--wheel", "--out", str(tmp_path / "a")]) == 0
    seconds = time.monotonic() - start
    assert main(["backport", "--to", real, "--wheel", "--out", str(tmp_path / "b")]) == 0
    (path,) = (tmp_path / "a").glob("*.whl")
    assert (tmp_path / "b" / path.name).read_bytes() == path.read_bytes()  # byte-identical rebuild
    version = path.name.split("-")[1]
    with capsys.disabled():  # the figure, shown with -s
        print(f"\nbuilt {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {seconds:.1f}s; rebuilt byte-identical")
    assert re.fullmatch(re.escape(real) + r"\+ropefix\.[0-9a-f]{8}", version)

    # the committed verdict's failing layouts, per family, one per proven rule
    plan = proven.ship_plan()[0]
    proofs = {
        fam: [v.proof for v in proven.family(fam).verdicts if v.proof is not None and v.rule in rules]
        for fam, rules in plan.items()
    }
    if real == REAL:
        assert {p.failure.hazard for p in proofs["qwen2_vl"]} == {"rope-deltas", "causal-mask", "rope-index-scatter"}
    replays = {}
    for fam, fam_proofs in proofs.items():
        replays[fam] = tmp_path / f"replay-{fam}.json"
        replays[fam].write_text(json.dumps({fam: [asdict(p.failure.example) for p in fam_proofs]}))
    kit = tmp_path / "kit"
    shutil.copytree(Path(ropefix.__file__).parent, kit / "ropefix")  # the kit alone: no other package shadows

    # one fresh virtualenv: the plain release first (red), then the wheel over it (green)
    env = tmp_path / "venv"
    site = _venv(env)
    pins = [f"{d}=={md.version(d)}" for d in ("accelerate", "hypothesis")]  # the suite's needs, as tested here
    _pip(env, "install", "-q", "--no-compile", "torch==2.13.0", f"transformers=={real}", *pins)
    for fam, fam_proofs in proofs.items():
        release, red = _replay(env, kit, replays[fam], fam)
        assert release == real
        # red where each proof failed (a proof found once another fix let the run go further fails earlier here)
        assert [
            (f["hazard"], f["site"]) if f and p.tree == "unpatched" else f is not None for f, p in zip(red, fam_proofs)
        ] == [(p.failure.hazard, p.failure.site) if p.tree == "unpatched" else True for p in fam_proofs], fam

    _pip(env, "install", "-q", "--no-compile", "--find-links", str(path.parent), f"transformers=={version}")
    imported = subprocess.run(
        [env / "bin" / "python", "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert imported == version
    # pip's own check, run by the venv's interpreter: `pip --python` would put the outer environment's
    # site-packages (where that pip lives) on the path and judge its distributions too
    subprocess.run([env / "bin" / "python", "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
    checked = subprocess.run(
        [env / "bin" / "python", "-m", "pip", "check"], check=False, capture_output=True, text=True, env=_clean_env()
    )
    assert "No broken requirements found" in checked.stdout, checked.stdout + checked.stderr
    for fam, fam_proofs in proofs.items():
        release, green = _replay(env, kit, replays[fam], fam)
        # None: no device error, and the placed run's tokens and logits equal the unsplit CPU reference bit for bit
        assert release == version and green == [None] * len(fam_proofs), fam

    capsys.readouterr()
    assert main(["backport", "--status", "--site", str(site)]) == 0
    out = capsys.readouterr().out
    assert f"transformers {version} in {site}: patched" in out and f"a ropefix wheel of transformers {real}" in out
