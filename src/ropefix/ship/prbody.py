"""PR_BODY.md: upstream's PR template, filled in from what the PR run did.

The template is read from the checkout (``.github/PULL_REQUEST_TEMPLATE.md``); its sections are
kept in order. "What does this PR do?" gets the description, links and the evidence table;
"Before submitting" keeps its boxes, ticking only what the kit itself did (the tests), with a note
that the rest are the contributor's to tick; "Who can review?" suggests the handles the template
itself lists for the areas the change touches. A tree without a template gets the same sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = (".github/PULL_REQUEST_TEMPLATE.md", ".github/pull_request_template.md", "PULL_REQUEST_TEMPLATE.md")
# Areas of the template's reviewer list that this change belongs to.
AREAS = ("vision", "multimodal", "generate", "text models")
FALLBACK = """# What does this PR do?

Fixes # (issue)

## Before submitting
- [ ] Did you read the contributor guideline, Pull Request section?
- [ ] Was this discussed/approved via a GitHub issue or the forum? Please add a link to it if that's the case.
- [ ] Did you write any new necessary tests?

## Who can review?
"""


@dataclass
class Context:
    base: str
    models: list[str]
    commits: list[tuple[str, str]]  # (rule, one-line summary) in series order
    tests: list[str] = field(default_factory=list)
    issue: str | None = None
    evidence: str | None = None  # the matrix table (out/matrix.md) when present
    checks: str = ""  # one line per check
    notes: list[str] = field(default_factory=list)


def find_template(tree: Path) -> tuple[str | None, str]:
    for rel in TEMPLATES:
        if (tree / rel).is_file():
            return rel, (tree / rel).read_text(errors="replace")
    return None, FALLBACK


def _sections(text: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if re.match(r"#{1,3} ", line):
            out.append((line, []))
        else:
            out[-1][1].append(line)
    return out


def describe(ctx: Context) -> list[str]:
    models = ", ".join(f"`{m}`" for m in ctx.models)
    lines = [
        (
            'Models split across devices (`device_map="auto"`) keep `rope_deltas` from prefill on the device of the '
            "inputs and, when decoding, add them to `cache_position[0]`, which can sit on another device:"
        ),
        "",
        (
            "    RuntimeError: Expected all tensors to be on the same device, but found at least two devices, "
            "cuda:0 and cuda:1!"
        ),
        "",
        (
            "This PR keeps the stored deltas on `cache_position`'s device where they are stored and where they are "
            "added. The move is guarded: where `cache_position` is `None` (plain forward calls, training) nothing "
            "changes, unlike the often quoted `rope_deltas.to(cache_position.device)`, which fails there."
        ),
        "",
        f"Models touched (modular and generated modeling files): {models}.",
        "",
        "Commits (each can be taken alone, the first is the core fix):",
        *[f"{i}. `{rule}`: {summary}" for i, (rule, summary) in enumerate(ctx.commits, 1)],
    ]
    if ctx.tests:
        lines += [
            "",
            (
                "Tests added (CPU path without `cache_position`, which the quoted one-liner breaks; `generate` "
                "with the model split by `device_map`, vision tower apart, skipped without two accelerators):"
            ),
            *[f"- `{t}`" for t in ctx.tests],
        ]
    if ctx.evidence:
        lines += ["", "Evidence (red unpatched / green patched, per release):", "", ctx.evidence.strip()]
    if ctx.checks:
        lines += ["", "Checks run on the touched files:", "", ctx.checks.strip()]
    lines += ["", *[f"Note: {n}" for n in ctx.notes]] if ctx.notes else []
    return lines


def _before_submitting(body: list[str], ctx: Context) -> list[str]:
    out = []
    for line in body:
        if re.match(r"\s*- \[ \]", line) and re.search(r"\btests?\b", line, re.IGNORECASE) and ctx.tests:
            line = line.replace("[ ]", "[x]", 1)
        out.append(line)
    out += ["", "_The unticked boxes are for the contributor: tick each only after doing it yourself._"]
    return out


def _reviewers(body: list[str]) -> list[str]:
    handles: list[str] = []
    for line in body:
        if any(a in line.lower() for a in AREAS):
            handles += [h for h in re.findall(r"@[\w-]+", line) if h not in handles]
    if not handles:
        return ["", "Suggested: maintainers of the vision-language models (the template lists none here)."]
    return ["", f"Suggested (from this template's list for {', '.join(AREAS)}): {' '.join(handles)}"]


def render(ctx: Context, template: str) -> str:
    out: list[str] = []
    for heading, body in _sections(template):
        title = heading.lower()
        if "what does this pr do" in title:
            out += [heading, "", *describe(ctx), ""]
            out.append(f"Fixes {ctx.issue}" if ctx.issue else "Fixes # (issue: add the link)")
            out.append("")
        elif "before submitting" in title:
            out += [heading, *_before_submitting(body, ctx)]
        elif "who can review" in title:
            out += [heading, *body, *_reviewers(body)]
        else:
            out += ([heading] if heading else []) + body
    return "\n".join(out).rstrip() + "\n"
