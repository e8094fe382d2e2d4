"""Patched wheels: a pinned release's own wheel with its proven fix, under a PEP 440 local version.

``ropefix backport --install`` changes files in one environment; the next ``pip install -r
requirements.txt`` brings the originals back. A wheel survives that: ``transformers-V+ropefix.N``
pins like any other package (requirements, constraints, ``--find-links``, a private index).

What goes in: the release's own ``py3-none-any`` wheel from the index (sha256 checked on download),
every file byte for byte, except the files of the proven patch (``backport.make_patch`` with the
verdict's plan, the very diff ``patches/`` holds; each file's original must equal the wheel's),
``transformers/__init__.py``'s ``__version__`` (the local version, so the running code says what it
is), the ``.dist-info`` folder renamed to the new version with ``METADATA`` saying what changed and
why, a machine-readable ``ropefix.json`` beside it (what ``backport --status`` reads), and a
regenerated ``RECORD``. Wheel signatures (``RECORD.jws``/``.p7s``) are dropped: they no longer hold.

The local segment ``N`` is a content hash, not a counter: the first 8 hex digits of a sha256 over
every file the wheel holds (name, mode, bytes) with the local version left blank: the release's
files, the patched ones, METADATA's text, ``ropefix.json`` (source wheel sha256, plan, proofs, the
building kit's version, the wheel format). Whatever changes the wheel's content changes ``N``, so
one name never stands for two contents (lock files with hashes stay valid), and no state is needed
to number builds. The price: ``N`` orders nothing; pin the exact version.

Deterministic: entries sorted (the package, then ``.dist-info``, ``RECORD`` last), every timestamp
1980-01-01 (the zip format's earliest), permissions 0644 (0755 where the source had an execute
bit), deflate at a fixed level; the same inputs give the same bytes (with the same zlib).
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
import stat
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ropefix import __version__
from ropefix.errors import RopefixError
from ropefix.files import atomic_write
from ropefix.fix.patch import Patch
from ropefix.prove.verdict import Report
from ropefix.ship.install import DIST, FileState, Installed, InstallReport
from ropefix.store import Store

WHEEL_FORMAT = 1  # bump when the layout of a built wheel changes: it feeds N
LOCAL_PREFIX = "ropefix"
LOCAL_LEN = 8  # hex digits of the content hash: 4 billion values, short enough to read in a pin
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: no build clock in the bytes
COMPRESSLEVEL = 6
PROVENANCE = "ropefix.json"  # in the .dist-info folder: what the wheel says about itself
_DROPPED = ("RECORD", "RECORD.jws", "RECORD.p7s")  # regenerated, or signatures the changes void


@dataclass(frozen=True)
class ProofLine:
    """Why one rule is in the wheel for one family: where the plain release failed, and on what."""

    family: str
    rule: str
    sites: tuple[str, ...]  # the rule's static sites in this family ("models/...:line"), all patched
    failed_at: str  # "transformers/models/...:line", the innermost frame of the failure
    error: str
    example: str  # the failing layout, call path and prompt, as the verdict describes it
    tree: str  # the tree it failed on ("unpatched")
    after: str  # what the patched tree did with the same example


@dataclass(frozen=True)
class Provenance:
    """What a ropefix wheel is: release, local segment, proof and files. Stored as ``ropefix.json``."""

    release: str
    local: str  # "ropefix.3f9a0c1d"; "" while N is being computed
    kit: str  # the ropefix that built the wheel
    source: str  # the release's wheel it was built from
    source_sha256: str
    verdict: str  # "transformers 4.49.0, torch 2.13.0+cpu, ropefix 0.1.0 (profile ci): reproduced-fixed"
    plan: dict[str, list[str]]  # family -> proven rules applied
    proofs: tuple[ProofLine, ...]
    files: dict[str, dict[str, str]]  # "transformers/models/..." -> {"original": sha256, "patched": sha256}
    format: int = WHEEL_FORMAT

    @property
    def version(self) -> str:
        return f"{self.release}+{self.local}"

    @property
    def filename(self) -> str:
        return f"{DIST}-{self.version}-py3-none-any.whl"

    def rules_line(self) -> str:
        return "; ".join(f"{fam}: {', '.join(rules)}" for fam, rules in sorted(self.plan.items()))

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists

    @staticmethod
    def from_json(d: dict[str, Any], source: str) -> Provenance:
        try:
            proofs = tuple(ProofLine(**{**p, "sites": tuple(p["sites"])}) for p in d["proofs"])
            return Provenance(**{**d, "proofs": proofs})
        except (KeyError, TypeError) as e:
            raise RopefixError(
                f"{source} is not a ropefix wheel record this kit reads ({type(e).__name__}: {e}). It was written by "
                "another ropefix version or damaged. Rebuild the wheel with `ropefix backport --to V --wheel`."
            ) from e


@dataclass(frozen=True)
class Built:
    provenance: Provenance
    data: bytes = field(repr=False)

    @property
    def filename(self) -> str:
        return self.provenance.filename

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------- building (pure: bytes in, bytes out)


def build(source_name: str, source: bytes, patch: Patch, report: Report, kit: str = __version__) -> Built:
    """The ropefix wheel made from the release's wheel ``source`` (its bytes) and the proven ``patch``."""
    if patch.plan is None:
        raise RopefixError(
            f"A ropefix wheel carries only a proven fix, and this patch for transformers {patch.version} is the "
            "unproven static one. Nothing was written. Build the wheel from a verdict that proves the fix."
        )
    release = patch.version
    with zipfile.ZipFile(io.BytesIO(source)) as zf:
        members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        contents = {name: zf.read(name) for name in members}
    _check_source(source_name, release, f"{DIST}-{release}.dist-info", contents, patch)
    prov = _provenance(source_name, source, patch, report, kit)
    # N names the content: hash everything the wheel holds with the local version left blank, then fill it in
    prov = replace(prov, local=local_segment(_contents(members, contents, patch, prov)))
    files = _contents(members, contents, patch, prov)
    record = f"{DIST}-{prov.version}.dist-info/RECORD"
    files[record] = (render_record(files, record), 0o644)
    return Built(prov, _zip(files, record))


def _contents(
    members: dict[str, zipfile.ZipInfo], contents: dict[str, bytes], patch: Patch, prov: Provenance
) -> dict[str, tuple[bytes, int]]:
    """Every file of the wheel but RECORD: name -> (bytes, mode)."""
    old_info, old_data = f"{DIST}-{prov.release}.dist-info", f"{DIST}-{prov.release}.data"
    new_info, new_data = f"{DIST}-{prov.version}.dist-info", f"{DIST}-{prov.version}.data"
    patched = {c.path: c.patched for c in patch.changes}
    files: dict[str, tuple[bytes, int]] = {}
    for name, info in members.items():
        top, _, rest = name.partition("/")
        if top == old_info and rest in _DROPPED:
            continue
        data = patched.get(name, contents[name])
        if name == f"{DIST}/__init__.py":
            data = versioned_init(data, prov.release, prov.version)
        elif name == f"{old_info}/METADATA":
            data = metadata(data.decode("utf-8"), prov).encode("utf-8")
        mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
        name = f"{new_info}/{rest}" if top == old_info else f"{new_data}/{rest}" if top == old_data else name
        files[name] = (data, mode)
    files[f"{new_info}/{PROVENANCE}"] = (json.dumps(prov.to_json(), indent=1, sort_keys=True).encode() + b"\n", 0o644)
    return files


def local_segment(files: dict[str, tuple[bytes, int]]) -> str:
    """``ropefix.<8 hex digits>``: the sha256 of every file's name, mode and bytes (see the module's docstring)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data, mode = files[name]
        digest.update(f"{name}\0{mode:o}\0{len(data)}\0".encode() + hashlib.sha256(data).digest())
    return local_from_digest(digest.hexdigest())


def local_from_digest(hexdigest: str) -> str:
    """The first 8-digit window of ``hexdigest`` that PEP 440 keeps as written."""
    for start in range(len(hexdigest) - LOCAL_LEN + 1):
        part = hexdigest[start : start + LOCAL_LEN]
        # PEP 440 reads an all-digit part as a number: "01234567" would normalise to "1234567", and the
        # file name would then differ from the version pip reports. Such a window is skipped.
        if not (part.isdigit() and part.startswith("0")):
            return f"{LOCAL_PREFIX}.{part}"
    raise RopefixError(f"No usable local version segment in {hexdigest!r} (a sha256 hex digest always has one).")


def versioned_init(data: bytes, release: str, version: str) -> bytes:
    """``transformers/__init__.py`` with ``__version__`` saying the local version (exactly one assignment)."""
    pattern = re.compile(rb"^__version__ = ([\"'])" + re.escape(release.encode()) + rb"\1[ \t]*$", re.MULTILINE)
    found = pattern.findall(data)
    if len(found) != 1:
        raise RopefixError(
            f"transformers/__init__.py in the {release} wheel does not assign __version__ = {release!r} exactly once "
            f"(found {len(found)}), so the built wheel could not report its own version. Nothing was written; "
            "this release's packaging is not one the wheel builder knows (please report it)."
        )
    return pattern.sub(lambda m: b'__version__ = "' + version.encode() + b'"', data, count=1)


def metadata(text: str, prov: Provenance) -> str:
    """The release's METADATA with the local version and, first in its description, what changed and why."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    at = [i for i, line in enumerate(lines) if line.startswith("Version:")]
    if len(at) != 1 or lines[at[0]].split(":", 1)[1].strip() != prov.release:
        raise RopefixError(
            f"The METADATA of the transformers {prov.release} wheel does not carry one `Version: {prov.release}` "
            "header. Nothing was written; the wheel on the index is not laid out as a release wheel should be."
        )
    lines[at[0]] = f"Version: {prov.version}"
    return "\n".join(lines) + "\n\n" + describe(prov) + ("\n" + body if body else "")


def describe(prov: Provenance) -> str:
    """The Markdown block METADATA's description starts with (``pip show -v``, an index page show it)."""
    out = [
        f"## ropefix {prov.version}: what changed and why",
        "",
        (
            f"This is transformers {prov.release} from its own wheel (`{prov.source}`, sha256 "
            f"`{prov.source_sha256}`) with ropefix's proven fix for the multi-device `rope_deltas` bug applied, "
            f"built by ropefix {prov.kit}. Nothing else differs except `transformers.__version__`, which reads "
            f"`{prov.version}`."
        ),
        "",
        f"Verdict: {prov.verdict}. Rules applied, per model family: {prov.rules_line()}.",
        "",
    ]
    for p in prov.proofs:
        out.append(
            f"- {p.family} / {p.rule} (sites {', '.join(p.sites) or 'none listed'}): on the {p.tree} release, "
            f"{p.example} failed at {p.failed_at} ({p.error}); with the patch: {p.after or 'not replayed'}."
        )
    out += ["", "Files changed (sha256 before -> after):", ""]
    out += [f"- {path}: {h['original']} -> {h['patched']}" for path, h in sorted(prov.files.items())]
    return "\n".join(out) + "\n"


def render_record(files: dict[str, tuple[bytes, int]], record: str) -> bytes:
    """RECORD: one ``path,sha256=<urlsafe b64, unpadded>,size`` line per file in wheel order; itself last, blank."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for name in _order(files, record):
        if name == record:
            continue
        data = files[name][0]
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([record, "", ""])
    return buf.getvalue().encode()


def _order(files: dict[str, tuple[bytes, int]], record: str) -> list[str]:
    # the package first, then .dist-info (installers read it last), RECORD at the very end
    return sorted(files, key=lambda n: (n == record, ".dist-info/" in n, n))


def _zip(files: dict[str, tuple[bytes, int]], record: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in _order(files, record):
            data, mode = files[name]
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.create_system = 3  # unix, whatever builds it: the mode bits above mean the same everywhere
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data, compresslevel=COMPRESSLEVEL)
    return buf.getvalue()


def _check_source(source_name: str, release: str, info_dir: str, contents: dict[str, bytes], patch: Patch) -> None:
    infos = sorted({n.split("/", 1)[0] for n in contents if n.split("/", 1)[0].endswith(".dist-info")})
    if infos != [info_dir] or f"{info_dir}/METADATA" not in contents:
        raise RopefixError(
            f"{source_name} is not the transformers {release} wheel ropefix expects: its metadata folders are "
            f"{', '.join(infos) or 'none'} (expected {info_dir}/ with METADATA). Nothing was written."
        )
    differs = [c.path for c in patch.changes if contents.get(c.path) != c.original]
    if differs:
        raise RopefixError(
            f"{source_name} holds {', '.join(differs)} differently from the release tree the patch was made on (or "
            "not at all), so the proven patch cannot be applied to it byte for byte. Nothing was written. Clear the "
            "release tree (`ropefix cache clear`) and retry; if it persists, the index's wheel and sdist differ."
        )


def _provenance(source_name: str, source: bytes, patch: Patch, report: Report, kit: str) -> Provenance:
    plan = {fam: list(rules) for fam, rules in sorted((patch.plan or {}).items())}
    proofs = []
    for fam, rules in plan.items():
        fr = report.family(fam)
        for rule in rules:
            v = fr.verdict(rule) if fr else None
            if v is None or v.proof is None:  # the plan came from this report: a proven rule has its proof
                raise RopefixError(
                    f"The verdict for transformers {report.release} lists no proof for {fam} / {rule}, which the patch "
                    "applies. Nothing was written. Re-run `ropefix verify` on that release."
                )
            f = v.proof.failure
            proofs.append(
                ProofLine(
                    fam,
                    rule,
                    v.sites,
                    v.proof.site,
                    f.error.splitlines()[0] if f.error else "",
                    v.proof.describe(),
                    v.proof.tree,
                    v.after,
                )
            )
    verdict = (
        f"transformers {report.release}, torch {report.torch}, ropefix {report.kit} (profile {report.profile}): "
        f"{report.state.value}"
    )
    files = {
        c.path: {"original": hashlib.sha256(c.original).hexdigest(), "patched": hashlib.sha256(c.patched).hexdigest()}
        for c in patch.changes
    }
    return Provenance(
        patch.version, "", kit, source_name, hashlib.sha256(source).hexdigest(), verdict, plan, tuple(proofs), files
    )


# ---------------------------------------------------------------- the edges: the index, the output folder


def build_release(version: str, patch: Patch, report: Report, store: Store | None = None) -> Built:
    """Download (sha256 checked) the release's pure-Python wheel and build the ropefix wheel from it."""
    from ropefix.releases import index

    path = index.download_wheel(version, store)
    return build(path.name, path.read_bytes(), patch, report)


def write(built: Built, out: Path, force: bool = False) -> tuple[Path, str]:
    """Put the wheel in ``out``: ``written``, ``unchanged`` (the same bytes are there) or ``replaced`` (``force``).

    A different file of the same name is refused without ``force``: two contents under one pinned name
    would make every lock file and cache that saw the first one wrong.
    """
    dest = Path(out) / built.filename
    if dest.exists() and not dest.is_file():
        raise RopefixError(f"{dest} exists and is not a file; nothing was written. Move it away and retry.")
    if not dest.exists():
        return _put(dest, built.data), "written"
    if dest.read_bytes() == built.data:
        return dest, "unchanged"
    if not force:
        raise RopefixError(
            f"{dest} already exists and differs from this build (sha256 {_sha_of(dest)} there, {built.sha256} now). "
            "Nothing was written. Move it away, or pass --force to replace it."
        )
    return _put(dest, built.data), "replaced"


def _put(dest: Path, data: bytes) -> Path:
    atomic_write(dest, data)
    os.chmod(dest, 0o644)  # a wheel folder is served to others (pip --find-links, a web server)
    return dest


def _sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def usage(dest: Path, built: Built) -> str:
    """What to put in requirements.txt or a constraints file, and how to serve the folder."""
    v = built.provenance.version
    folder = dest.resolve().parent
    return "\n".join(
        [
            f"requirements.txt (pin the patched build):  transformers=={v}",
            f"or a constraints file (requirements.txt keeps transformers=={built.provenance.release}):  transformers=={v}",
            f"with hash checking (pip --require-hashes):  transformers=={v} --hash=sha256:{built.sha256}",
            "serve it from the folder:",
            f"  pip install --find-links {folder} transformers=={v}",
            f"  or put `--find-links {folder}` on the first line of requirements.txt (or upload it to a private index)",
        ]
    )


# ---------------------------------------------------------------- the installed side


def installed(inst: Installed) -> Provenance | None:
    """The record of the ropefix wheel ``inst`` was installed from; None for any other transformers."""
    for dist in md.distributions(name=DIST, path=[str(inst.site)]):
        text = dist.read_text(PROVENANCE)
        if text:
            source = f"{PROVENANCE} of transformers {dist.version} in {inst.site}"
            try:
                return Provenance.from_json(json.loads(text), source)
            except ValueError as e:
                raise RopefixError(f"{source} is damaged ({e}). Reinstall the wheel.") from e
        return None
    return None


def status(prov: Provenance, inst: Installed) -> InstallReport:
    """Each patched file of an installed ropefix wheel: still patched, back to the original, or changed."""
    files = {}
    for path, digests in sorted(prov.files.items()):
        try:
            digest = hashlib.sha256((inst.site / path).read_bytes()).hexdigest()
        except FileNotFoundError:
            digest = ""
        if digest == digests["patched"]:
            files[path] = FileState.PATCHED
        elif digest == digests["original"]:
            files[path] = FileState.UNPATCHED
        else:
            files[path] = FileState.MODIFIED
    return InstallReport(inst.version, inst.site, files)
