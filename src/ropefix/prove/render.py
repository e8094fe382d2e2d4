"""Every rendering of verdicts in one place: words, marks and colours per state, verify's text report,
one-line summaries, the Markdown evidence table PR bodies embed and the findings table.

Pure functions of ``ropefix.prove.verdict`` values; the matrix report and the PR body call these.
"""

from __future__ import annotations

from collections import Counter

from ropefix.fix import hazards
from ropefix.prove.verdict import Failure, FamilyReport, Finding, Report, State, Verdict

# What a reader sees for each state (legends use the same words).
LABELS: dict[State, str] = {
    State.REPRODUCED_FIXED: "reproduced, fixed",
    State.FIX_FAILED: "fix failed",
    State.NOT_JUDGED: "not judged (too little compared)",
    State.LATENT: "latent (pattern present, judged, not reproduced)",
    State.NOT_AFFECTED: "not affected (judged)",
    State.SKIPPED: "skipped (could not run)",
}
MARKS: dict[State, str] = {
    State.REPRODUCED_FIXED: "🟢",
    State.FIX_FAILED: "🔴",
    State.NOT_JUDGED: "🟣",
    State.LATENT: "🔵",
    State.NOT_AFFECTED: "⚪",
    State.SKIPPED: "⏭️",
}
# One colour per state, for every picture (colour-blind safe where possible).
COLOURS: dict[State, str] = {
    State.REPRODUCED_FIXED: "#1a9850",
    State.FIX_FAILED: "#d73027",
    State.NOT_JUDGED: "#984ea3",
    State.LATENT: "#91bfdb",
    State.NOT_AFFECTED: "#e0e0e0",
    State.SKIPPED: "#ffffff",
}


def red_green(v: Verdict) -> str:
    """``rope-deltas red->green``, ``causal-mask latent``, ``rope-index-scatter not-judged``."""
    if v.state is State.REPRODUCED_FIXED:
        return f"{v.rule} red->green"
    if v.state is State.FIX_FAILED:
        return f"{v.rule} red->still red" if v.reproduced else f"{v.rule} fix failed"
    return f"{v.rule} {v.state.value}"


def family_line(f: FamilyReport) -> str:
    """One line per family: its state, its rules, its findings, what was compared."""
    rules = ", ".join(red_green(v) for v in f.verdicts if v.state is not State.NOT_AFFECTED) or "no rule applies"
    extra = (
        f"; {len(f.findings)} finding(s): {', '.join(sorted({x.hazard for x in f.findings}))}" if f.findings else ""
    )
    why = f" ({f.reason})" if f.reason else ""
    return f"{f.family}: {f.state.value}{why}; {rules}; {f.judged} pairs judged{extra}"


def summary(r: Report) -> str:
    """One short line for a matrix cell or a step: which families reproduced, which are latent or not judged."""
    by_state: dict[State, list[str]] = {}
    for f in r.families:
        by_state.setdefault(f.state, []).append(f.family)
    parts = [f"{s.value}: {', '.join(names)}" for s, names in sorted(by_state.items(), key=lambda kv: _order(kv[0]))]
    hazards_found = sorted({x.hazard for f in r.families for x in f.findings})
    if hazards_found:
        parts.append("findings: " + ", ".join(hazards_found))
    broken = r.hotfix_failures()
    if broken:
        parts.append("hotfix does NOT hold: " + ", ".join(f.family for f in broken))
    return "; ".join(parts) or "no family checked"


def _order(s: State) -> int:
    from ropefix.prove.verdict import ORDER

    return ORDER.index(s)


def text(r: Report) -> str:
    """verify's report for a person: per family and rule, the proof, the patched result, the findings."""
    verdict = r.state.value + ("; the runtime hotfix does NOT hold" if r.hotfix_failures() else "")
    head = f"transformers {r.release} (torch {r.torch}) at {r.tree}: {verdict} "
    lines = [head + f"({r.duration_s:.0f}s, profile {r.profile}, ropefix {r.kit})"]
    for f in r.families:
        lines.append(
            f"\n{f.family}: {f.state.value}, {f.examples_run} examples, {f.judged} path x prompt pairs judged"
        )
        if f.reason:
            lines.append(f"  why: {f.reason}")
        for v in f.verdicts:
            lines.append(f"  rule {v.rule}: {v.state.value} ({len(v.sites)} static site(s)) - {v.reason}")
            if v.proof:
                lines.append(f"    red at {v.proof.site} {v.proof.tree_words()}  [{v.proof.failure.code}]")
                lines.append(f"    failing layout: {v.proof.describe()}")
            if v.after:
                lines.append(f"    patched: {v.after}")
        for x in f.findings:
            tag = "single accelerator, " if x.single_accelerator else ""
            lines.append(f"  finding ({tag}{x.tree}): {x.hazard} at {x.site}")
            lines.append(f"    {x.failure.code}")
            lines.append(f"    shrunk example: {x.failure.example.describe()}")
        if f.hotfix:
            lines.append(f"  hotfix arm: {hotfix_words(f)}")
            lines += [
                f"    {h.order}: fails at transformers/{h.failure.site} ({h.failure.hazard}): {h.example.describe()}"
                for h in f.hotfix
                if h.active and h.failure is not None
            ]
        for b in f.broken_paths:
            lines.append(f"  BROKEN by the patch (worked before): {b}")
        if f.not_compared:
            lines.append(f"  not compared ({len(f.not_compared)} pair(s) fail on the reference itself):")
            lines += [f"    {pair}: {why[:160]}" for pair, why in f.not_compared.items()]
        lines += [f"  note: {n}" for n in f.notes]
    return "\n".join(lines)


def evidence_markdown(reports: list[Report]) -> str:
    """The verdicts as the Markdown table PR_BODY.md shows: one row per proven or failing rule and finding."""
    rows = [
        "| transformers | torch | model | rule | unpatched | patched | failing site | pairs judged |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: |",
    ]
    for r in reports:
        for f in r.families:
            for v in f.verdicts:
                if v.state is State.NOT_AFFECTED:
                    continue
                red = "reproduced" if v.reproduced else v.state.value
                green = "passes" if v.state is State.REPRODUCED_FIXED else ("fails" if v.reproduced else "n/a")
                site = f"`{v.proof.site}`" if v.proof else ""
                rows.append(
                    f"| {r.release} | {r.torch} | {f.family} | {v.rule} | {red} | {green} | {site} | {v.judged} |"
                )
            for x in f.findings:
                rows.append(
                    f"| {r.release} | {r.torch} | {f.family} | ({x.hazard}, no rule) | reproduced | "
                    f"{'fails' if x.tree == 'patched' else 'n/a'} | `{x.site}` | {f.judged} |"
                )
    return "\n".join(rows) + "\n"


def _failures(f: FamilyReport) -> list[Failure]:
    """Every failure a family's verdicts and findings hold: the proofs first, then the findings."""
    return [v.proof.failure for v in f.verdicts if v.proof] + [x.failure for x in f.findings]


def findings_table(reports: list[Report]) -> str:
    """Per release x family, the hazard classes found, with counts, first site and shrunk example (Markdown)."""
    rows = [
        "| transformers | model | hazard | count | accelerators | first failing site | shrunk example |",
        "| --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for r in reports:
        for f in r.families:
            failures = _failures(f)
            counts = Counter(x.hazard for x in failures)
            for hazard, n in sorted(counts.items()):
                first = next(x for x in failures if x.hazard == hazard)
                devs = "one" if first.devices == 1 else f"{first.devices}"
                rows.append(
                    f"| {r.release} | {f.family} | {hazard} | {n} | {devs} | `transformers/{first.site}` | "
                    f"{_md(first.example.describe())} |"
                )
    return "\n".join(rows) + "\n"


def release_spans(releases: list[str], order: list[str], dash: str = "-") -> str:
    """``4.47.1-4.52.4, 5.2.0``: runs of consecutive releases (in ``order``) joined."""
    idx = sorted({order.index(r) for r in releases})
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(order[r[0]] if len(r) == 1 else f"{order[r[0]]}{dash}{order[r[-1]]}" for r in runs)


def hazard_summary(reports: list[Report]) -> str:
    """What users hit, per hazard class across the history: releases, families, cells, the accelerators the
    smallest failing layout needed, what the kit does about it, and the newest failing site (Markdown)."""
    order = [r.release for r in reports]
    seen: dict[str, list[tuple[str, str, Failure]]] = {}
    rules: dict[str, set[str]] = {}  # hazard -> rules whose proof it is
    for r in reports:
        for f in r.families:
            failures = _failures(f)
            for v in f.verdicts:
                if v.proof is not None and v.state is State.REPRODUCED_FIXED:
                    rules.setdefault(v.proof.failure.hazard, set()).add(v.rule)
            for hazard in sorted({x.hazard for x in failures}):
                first = next(x for x in failures if x.hazard == hazard)
                seen.setdefault(hazard, []).append((r.release, f.family, first))
    rows = [
        "| hazard | releases | model families | cells | fewest accelerators | the kit | newest failing site |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for hazard, hits in sorted(seen.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        fams = sorted({fam for _, fam, _ in hits})
        fewest = min(x.devices for _, _, x in hits)
        release, _, newest = hits[-1]
        fixed = rules.get(hazard)
        kit = f"fixed by `{', '.join(sorted(fixed))}` where proven" if fixed else "reported (no rule)"
        rows.append(
            f"| {hazard} | {release_spans([h[0] for h in hits], order)} | {', '.join(fams)} | {len(hits)} | {fewest} | {kit} | "
            f"{release}: `transformers/{newest.site}` `{_md(newest.code)}` |"
        )
    if len(rows) == 2:
        rows.append("| (none found) | | | 0 | | | |")
    return "\n".join(rows) + "\n"


def hotfix_words(f: FamilyReport) -> str:
    """What the hotfix arm found for a family, in one phrase."""
    claimed = [h for h in f.hotfix if h.active]
    if not f.hotfix:
        return "not exercised (no rope-deltas failure)"
    if not claimed:
        return f"{len(f.hotfix)} run(s); the hotfix is a no-op in this release (the file fix covers it)"
    bad = [h for h in claimed if h.failure is not None]
    layouts = len({h.example.layout.get("call") or str(h.example.layout) for h in claimed})
    orders = ", ".join(sorted({h.order for h in claimed}))
    if bad:
        return f"does NOT hold: {len(bad)} of {len(claimed)} run(s) fail ({layouts} failing layout(s); {orders})"
    return f"holds: {len(claimed)} run(s) over {layouts} failing layout(s), tokens identical ({orders})"


def finding_words(x: Finding) -> str:
    return f"{x.hazard} ({hazards.summary(x.hazard)}) at {x.site}"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def sweep_markdown(
    reports: list[Report],
    cell_seconds: float,
    not_judged: list[tuple[object, str]],
    wall_seconds: float | None = None,
    reused: int = 0,
) -> str:
    """The sweep as a release x family table of states, the counts, and every not-judged cell with its reason."""
    fams = sorted({f.family for r in reports for f in r.families})
    rows = ["| transformers | " + " | ".join(fams) + " |", "| --- |" + " --- |" * len(fams)]
    counts: Counter[State] = Counter()
    for r in reports:
        cells = []
        for name in fams:
            f = r.family(name)
            if f is None:
                cells.append("")
                continue
            counts[f.state] += 1
            hot = {True: " H", False: " H✗", None: ""}[f.hotfix_holds]
            cells.append(f"{MARKS[f.state]} {f.state.value} ({f.judged}){hot}")
        rows.append(f"| {r.release} | " + " | ".join(cells) + " |")
    total = sum(counts.values())
    share = 100.0 * counts[State.NOT_JUDGED] / total if total else 0.0
    lines = [
        *rows,
        "",
        f"{total} release x family cells, {cell_seconds / 60:.0f} min of verify time summed"
        + (
            f" (this run: {wall_seconds / 60:.1f} min wall, {reused} cells kept from earlier runs)"
            if wall_seconds is not None
            else ""
        )
        + ": "
        + ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda kv: _order(kv[0])))
        + f"; not-judged {share:.1f}%. In brackets: call path x prompt pairs judged. H: the runtime hotfix held on "
        "every layout that failed at the rope-deltas line (H✗: it did not; no mark: nothing to check or a no-op).",
        "",
        "Legend: " + "; ".join(f"{MARKS[s]} {s.value}: {LABELS[s]}" for s in State if s is not State.SKIPPED),
    ]
    if not_judged:
        lines += ["", "Not judged, with the reason:", ""]
        lines += [f"- {cell}: {why}" for cell, why in not_judged]
    return "\n".join(lines) + "\n"
