"""compare's ``--html FILE``: one self-contained HTML page a reviewer of a CI artefact reads first.

Rendered from the delivered JSON document alone (so it shows exactly the
figures ``--json`` prints, in the same unit): the verdict of the checks, the
leaderboard (one row per candidate), each candidate's KL histogram, KL by the
base's confidence, KL along the sequence, the worst positions (with token text
under ``--tokenizer``/``--vocab``) and every figure of the document in a table.
Keys a result does not hold (an older or smaller document) leave their section
out or say so.

Self-contained: one file, inline CSS and inline SVG charts, no script, no
font, image or stylesheet fetched, no URL at all. Every string from the
inputs (file names, tokens, notes) is HTML-escaped, after control characters
are written as escapes (:func:`klcli.errors.shown`).
"""

from __future__ import annotations

import html
import math

from klcli.errors import shown
from klcli.result import json_safe

# One colour per candidate (Okabe–Ito, readable by the colour-blind), cycled beyond eight.
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;
color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
th,td{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f4f4f4;white-space:normal}td.key,th.key,td.text{text-align:left}
td.key{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
code,.token{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;background:#f4f4f4;padding:0 .2em}
.verdict{font-size:1.2em;font-weight:bold;padding:.4em .8em;display:inline-block;border-radius:.3em}
.pass{background:#e3f4e8;color:#14592a}.fail{background:#fbe3e3;color:#8a1414}.none{background:#eee}
.muted{color:#666}svg{display:block;margin:.5em 0;max-width:100%;height:auto}
svg text{font-size:11px;fill:#333}.legend span{display:inline-block;margin-right:1.2em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
details summary{cursor:pointer;font-weight:bold}.figures td.text{white-space:normal;overflow-wrap:anywhere}
"""


def _escape(text) -> str:
    """Untrusted text for HTML: control characters as escapes, then <, >, & and quotes as entities."""
    return html.escape(shown(str(text)), quote=True)


def _exact(value) -> str:
    """A JSON value as the JSON writes it (shortest round-trip float), for the table of every figure."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _short(value, digits: int = 4) -> str:
    """A figure for people: ``digits`` significant digits; ``inf`` and null as such."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _escape(value)
    return f"{value:.{digits}g}"


def _get(node, path: str):
    """The value at a dotted ``path`` in ``node``, or None."""
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _number(value) -> float | None:
    """A finite-or-infinite float from a JSON value ("inf" included), or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf"):
        return float(value)
    return None


def candidates(doc: dict) -> list[tuple[str, dict]]:
    """(name, figures) of each candidate: the ``tests`` entries, or the one TEST of a single-candidate result."""
    tests = doc.get("tests")
    if isinstance(tests, list) and tests and all(isinstance(test, dict) for test in tests):
        return [(str(test.get("name", f"test {index + 1}")), test) for index, test in enumerate(tests)]
    named = [entry.get("operand") for entry in doc.get("inputs", []) if entry.get("role") == "TEST"]
    return [(str(named[0]) if named else "TEST", doc)]


def _base_name(doc: dict) -> str:
    named = [entry.get("operand") for entry in doc.get("inputs", []) if entry.get("role") == "BASE"]
    return str(named[0]) if named else "BASE"


# The leaderboard: (heading, key of the figure, key of its stderr, shown as a percentage).
LEADERBOARD = (
    ("mean KL", "kl.mean", "kl.stderr", False),
    ("KL p99", "kl.p99", None, False),
    ("KL max", "kl.max", None, False),
    ("same top-1", "top1_agreement", "top1_agreement_stderr", True),
    ("JS mean", "js.mean", None, False),
    ("TV mean", "tv.mean", None, False),
    ("PPL(test)", "ppl_test", "ppl_test_stderr", False),
    ("ΔPPL", "delta_ppl", "delta_ppl_stderr", False),
    ("PPL ratio", "ppl_ratio", None, False),
)


def _cell(figures: dict, key: str, stderr_key: str | None, percent: bool) -> str:
    value = _get(figures, key)
    if value is None:
        return "<td>—</td>"
    error = _get(figures, stderr_key) if stderr_key else None
    scale, suffix = (100.0, " %") if percent else (1.0, "")
    number, spread = _number(value), _number(error)
    shown_value = _short(number * scale if number is not None else value)
    if spread is not None:
        shown_value += f" ± {_short(spread * scale, 2)}"
    data = f' data-key="{_escape(key)}" data-value="{_escape(_exact(value))}"'
    return f"<td{data}>{shown_value}{suffix}</td>"


def _leaderboard(doc: dict, entries: list[tuple[str, dict]]) -> str:
    columns = [column for column in LEADERBOARD if any(_get(f, column[1]) is not None for _, f in entries)]
    ranked = sorted(enumerate(entries), key=lambda item: (_number(_get(item[1][1], "kl.mean")) is None,
                                                          _number(_get(item[1][1], "kl.mean")) or 0.0, item[0]))
    unit = _escape(doc.get("unit", "nats"))
    head = "".join(f"<th>{_escape(title)}</th>" for title, *_ in columns)
    rows = []
    for rank, (index, (name, figures)) in enumerate(ranked, start=1):
        swatch = f'<span class="swatch" style="background:{COLOURS[index % len(COLOURS)]}"></span>'
        cells = "".join(_cell(figures, key, error, percent) for _, key, error, percent in columns)
        rows.append(f'<tr><td>{rank}</td><td class="text">{swatch}{_escape(name)}</td>{cells}</tr>')
    return (f'<section id="leaderboard"><h2>Leaderboard</h2><p class="muted">Against {_escape(_base_name(doc))}; '
            f"sorted by mean KL(base‖test), lowest first; divergences in {unit}; ± one standard error.</p>"
            f'<table><tr><th>#</th><th class="key">candidate</th>{head}</tr>{"".join(rows)}</table></section>')


def _verdict(doc: dict) -> str:
    checks = doc.get("checks") or []
    if not checks:
        return '<p class="verdict none">no --check given</p>'
    failed = [check for check in checks if not check.get("passed")]
    if not failed:
        return f'<p class="verdict pass">all {len(checks)} checks passed</p>'
    return f'<p class="verdict fail">{len(failed)} of {len(checks)} checks FAILED</p>'


def _checks(doc: dict) -> str:
    checks = doc.get("checks") or []
    if not checks:
        return ""
    named = any("candidate" in check for check in checks)  # several candidates: each check names its own

    def row(check: dict) -> str:
        who = f'<td class="text">{_escape(check.get("candidate", ""))}</td>' if named else ""
        verdict = "pass" if check.get("passed") else "<b>FAIL</b>"
        return (f'<tr><td class="key">{_escape(check.get("expr"))}</td>{who}<td>{_short(check.get("actual"), 7)}'
                f'</td><td>{_short(check.get("threshold"), 7)}</td><td>{verdict}</td></tr>')

    who = '<th class="key">candidate</th>' if named else ""
    return (f'<section id="checks"><h2>Checks</h2><table><tr><th class="key">check</th>{who}<th>actual</th>'
            f'<th>threshold</th><th>result</th></tr>{"".join(row(check) for check in checks)}</table></section>')


# --- charts: inline SVG ------------------------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 220, 70, 40, 12


def _svg(body: str, label: str, height: int = HEIGHT) -> str:
    return (f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="{_escape(label)}"><title>{_escape(label)}</title>{body}</svg>')


def _axes(top_value: float, y_label: str, height: int = HEIGHT) -> str:
    """The y axis from 0 to ``top_value`` with three ticks, and the x axis line."""
    plot = height - BOTTOM - TOP
    parts = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{height - BOTTOM}" stroke="#999"/>',
             f'<line x1="{LEFT}" y1="{height - BOTTOM}" x2="{WIDTH - 8}" y2="{height - BOTTOM}" stroke="#999"/>']
    for fraction in (0.0, 0.5, 1.0):
        y = height - BOTTOM - fraction * plot
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_short(top_value * fraction, 3)}'
                     "</text>")
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" stroke="#eee"/>')
    parts.append(f'<text x="14" y="{TOP + plot / 2:.1f}" transform="rotate(-90 14 {TOP + plot / 2:.1f})" '
                 f'text-anchor="middle">{_escape(y_label)}</text>')
    return "".join(parts)


def _histogram_svg(histogram: dict, colour: str, name: str, unit: str) -> str:
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    bars = [("0", "exactly 0", histogram.get("zero") or 0)]
    bars += [(f"{edges[i]:.2g}", f"[{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if i == len(counts) - 1 else ')'}",
              count) for i, count in enumerate(counts)]
    if histogram.get("infinite"):
        bars.append(("inf", "infinite", histogram["infinite"]))
    fullest = max(count for _, _, count in bars) or 1
    plot, span = HEIGHT - BOTTOM - TOP, (WIDTH - LEFT - 16) / len(bars)
    parts = [_axes(fullest, "positions")]
    for index, (tick, bin_name, count) in enumerate(bars):
        x, tall = LEFT + 4 + index * span, plot * count / fullest
        parts.append(f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - tall:.1f}" width="{max(span - 3, 1):.1f}" '
                     f'height="{tall:.1f}" fill="{colour}"><title>{_escape(bin_name)}: {count}</title></rect>')
        if len(bars) <= 16 or index % 2 == 0:
            parts.append(f'<text x="{x + span / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{tick}'
                         "</text>")
    parts.append(f'<text x="{(WIDTH + LEFT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">KL(base‖test) per '
                 f"position, {_escape(unit)}, log-spaced bins (lower edge)</text>")
    return _svg("".join(parts), f"KL histogram of {name}")


def _histograms(entries, unit: str) -> str:
    charts = [f"<h3>{_escape(name)}</h3>" + _histogram_svg(figures["kl_histogram"], COLOURS[i % len(COLOURS)],
                                                            name, unit)
              for i, (name, figures) in enumerate(entries) if isinstance(figures.get("kl_histogram"), dict)]
    if not charts:
        return ""
    return ('<section id="histogram"><h2>KL per position</h2><p class="muted">How many positions have each size '
            "of KL; bins a fraction of a decade wide, exact zeros apart.</p>" + "".join(charts) + "</section>")


def _legend(entries) -> str:
    return '<p class="legend">' + "".join(
        f'<span><span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span>{_escape(name)}</span>'
        for i, (name, _) in enumerate(entries)) + "</p>"


def _confidence(entries, unit: str) -> str:
    held = [(i, name, figures["by_confidence"]) for i, (name, figures) in enumerate(entries)
            if isinstance(figures.get("by_confidence"), list) and figures["by_confidence"]]
    if not held:
        return ""
    buckets = len(held[0][2])
    means = [_number(bucket.get("kl_mean")) for _, _, table in held for bucket in table]
    fullest = max((m for m in means if m is not None and math.isfinite(m)), default=0.0) or 1.0
    plot, span = HEIGHT - BOTTOM - TOP, (WIDTH - LEFT - 16) / buckets
    width = max((span - 6) / len(held), 1)
    parts = [_axes(fullest, f"mean KL ({unit})")]
    for slot, (i, name, table) in enumerate(held):
        for b, bucket in enumerate(table):
            mean = _number(bucket.get("kl_mean"))
            if mean is None:
                continue
            tall = plot * min(mean, fullest) / fullest
            x = LEFT + 4 + b * span + slot * width
            parts.append(f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - tall:.1f}" width="{width:.1f}" '
                         f'height="{tall:.1f}" fill="{COLOURS[i % len(COLOURS)]}"><title>{_escape(name)} '
                         f"[{_short(_number(bucket.get('lo')), 2)}, {_short(_number(bucket.get('hi')), 2)}): "
                         f"{_short(mean)} over {_short(bucket.get('count'))} positions</title></rect>")
    for b, bucket in enumerate(held[0][2]):
        parts.append(f'<text x="{LEFT + 4 + (b + 0.5) * span:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                     f'text-anchor="middle">{_short(_number(bucket.get("lo")), 2)}–'
                     f'{_short(_number(bucket.get("hi")), 2)}</text>')
    parts.append(f'<text x="{(WIDTH + LEFT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">the base model\'s '
                 "top-1 probability</text>")
    # One table: a row per bucket, for each candidate its positions, mean KL and top-1 agreement.
    names = "".join(f'<th colspan="3">{_escape(name)}</th>' for _, name, _ in held)
    head = "<th></th><th></th>" + "<th>positions</th><th>mean KL</th><th>same top-1</th>" * len(held)
    rows = []
    for b, bucket in enumerate(held[0][2]):
        cells = "".join(f"<td>{_short(t[b].get('count'))}</td><td>{_short(_number(t[b].get('kl_mean')))}</td>"
                        f"<td>{_short(_number(t[b].get('top1_agreement')))}</td>" if b < len(t) else "<td></td>" * 3
                        for _, _, t in held)
        rows.append(f"<tr><td>{_short(_number(bucket.get('lo')), 2)}</td><td>{_short(_number(bucket.get('hi')), 2)}"
                    f"</td>{cells}</tr>")
    table = (f'<table><tr><th colspan="2">base top-1 p</th>{names}</tr><tr>{head}</tr>{"".join(rows)}</table>')
    return ('<section id="confidence"><h2>KL by the base model\'s confidence</h2><p class="muted">Drift where the '
            "base is unsure is expected; drift where it is confident is damage.</p>" + _legend(entries)
            + _svg("".join(parts), "mean KL by the base's top-1 probability") + table + "</section>")


def _sequence(entries, unit: str) -> str:
    held = [(i, name, figures["kl_by_position"]) for i, (name, figures) in enumerate(entries)
            if isinstance(figures.get("kl_by_position"), list) and figures["kl_by_position"]]
    if not held:
        return ""
    length = max(len(line) for _, _, line in held)
    values = [_number(v) for _, _, line in held for v in line]
    fullest = max((v for v in values if v is not None and math.isfinite(v)), default=0.0) or 1.0
    plot = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT - 16) / max(length - 1, 1)
    parts = [_axes(fullest, f"mean KL ({unit})")]
    for i, name, line in held:
        runs: list[list[str]] = []
        run: list[str] = []
        for index, value in enumerate(line):
            number = _number(value)
            if number is None or not math.isfinite(number):  # a gap: no scored position (or an infinite mean)
                runs.append(run)
                run = []
                continue
            run.append(f"{LEFT + 4 + index * step:.1f},{HEIGHT - BOTTOM - plot * number / fullest:.1f}")
        runs.append(run)
        colour = COLOURS[i % len(COLOURS)]
        for points in filter(None, runs):
            if len(points) == 1:
                x, y = points[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
            else:
                parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
                             f'stroke-width="1.5"><title>{_escape(name)}</title></polyline>')
    for fraction in (0.0, 0.5, 1.0):
        index = round(fraction * (length - 1))
        parts.append(f'<text x="{LEFT + 4 + index * step:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                     f'text-anchor="middle">{index}</text>')
    parts.append(f'<text x="{(WIDTH + LEFT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">position in the '
                 "sequence (mean over sequences)</text>")
    return ('<section id="sequence"><h2>KL along the sequence</h2>' + _legend(entries)
            + _svg("".join(parts), "mean KL per position index") + "</section>")


def _token(entry: dict, key: str) -> str:
    value = _short(entry.get(key))
    text = entry.get(f"{key}_text")
    if isinstance(text, str):
        from klcli.io.tokenizer import token_shown

        value += f' <span class="token">{_escape(token_shown(text))}</span>'
    return value


def _worst(entries) -> str:
    tables = []
    for name, figures in entries:
        worst = figures.get("worst")
        if not isinstance(worst, list) or not worst:
            continue
        columns = list(dict.fromkeys(key for entry in worst if isinstance(entry, dict) for key in entry
                                     if not key.endswith("_text")))
        head = "".join(f"<th>{_escape(column)}</th>" for column in columns)
        rows = "".join("<tr>" + "".join(f"<td>{_token(entry, column)}</td>" for column in columns) + "</tr>"
                       for entry in worst if isinstance(entry, dict))
        tables.append(f"<h3>{_escape(name)}</h3><table><tr>{head}</tr>{rows}</table>")
    if not tables:
        return ""
    return ('<section id="worst"><h2>Worst positions</h2><p class="muted">The positions with the largest '
            "KL(base‖test); rows numbered as in the input.</p>" + "".join(tables) + "</section>")


def _flat(node, path: str, out: list[tuple[str, str]]) -> None:
    """Every leaf of the document as (dotted path, value as JSON writes it); a list of numbers on one row."""
    if isinstance(node, dict):
        for key, value in node.items():
            _flat(value, f"{path}.{key}" if path else str(key), out)
    elif isinstance(node, list) and not all(_number(v) is not None or v is None for v in node):
        for index, value in enumerate(node):  # objects, names, notes: one row each
            _flat(value, f"{path}[{index}]", out)
    elif isinstance(node, list):  # numbers (a histogram's edges, KL by position): one row
        out.append((path, "[" + ", ".join(_exact(v) for v in node) + "]"))
    else:
        out.append((path, _exact(node)))


def _figures(doc: dict) -> str:
    rows: list[tuple[str, str]] = []
    _flat({key: value for key, value in doc.items() if key != "per_row"}, "", rows)
    body = "".join(f'<tr><td class="key">{_escape(key)}</td><td class="text">{_escape(value)}</td></tr>'
                   for key, value in rows)
    per_row = doc.get("per_row")
    left_out = ("" if not isinstance(per_row, dict) else
                f'<p class="muted">The per-row values ({_escape(", ".join(per_row))}) are in the JSON, not here.</p>')
    return ('<section id="figures"><h2>Every figure</h2><details open><summary>the JSON document, key by key'
            f'</summary>{left_out}<table class="figures"><tr><th class="key">key</th><th class="key">value</th></tr>'
            f"{body}</table></details></section>")


def _notes(doc: dict) -> str:
    notes = doc.get("notes") or []
    if not notes:
        return ""
    items = "".join(f"<li>{_escape(note)}</li>" for note in notes)
    return f'<section id="notes"><h2>Notes</h2><ul>{items}</ul></section>'


def html_report(document: dict) -> str:
    """The HTML page of a compare result's JSON document (as delivered: in its unit, with its checks)."""
    doc = json_safe(document)
    entries = candidates(doc)
    unit = str(doc.get("unit", "nats"))
    names = ", ".join(name for name, _ in entries)
    inputs = "".join("<tr>" + "".join(f'<td class="text">{_escape(cell)}</td>' for cell in (
        entry.get("role"), entry.get("operand"), entry.get("kind", ""),
        "×".join("?" if size is None else str(size) for size in entry.get("shape", [])), entry.get("dtype", "")))
        + "</tr>" for entry in doc.get("inputs", []))
    header = (f"<header><h1>klcli {_escape(doc.get('command', 'compare'))}</h1><p>{_escape(names)} against "
              f"{_escape(_base_name(doc))}: {_short(doc.get('rows'))} positions, figures in {_escape(unit)}, klcli "
              f"{_escape(doc.get('version', ''))}</p>{_verdict(doc)}"
              f'<table><tr><th class="key">input</th><th class="key">operand</th><th class="key">kind</th>'
              f'<th class="key">shape</th><th class="key">dtype</th></tr>{inputs}</table></header>')
    sections = [header, _leaderboard(doc, entries), _checks(doc), _histograms(entries, unit),
                _confidence(entries, unit), _sequence(entries, unit), _worst(entries), _notes(doc), _figures(doc)]
    title = f"klcli compare: {names} against {_base_name(doc)}"
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(section for section in sections if section) + "\n</body></html>\n")
