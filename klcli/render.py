"""Results as people and programs read them: rich tables, JSON, CSV, NDJSON, one number.

The only module that imports rich, and only when a table or progress bar is
drawn, so ``-q`` and JSON output never pay for it.
"""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any

from klcli.core.stats import SUMMARY_KEYS
from klcli.result import Result, json_safe

FORMATS = ("table", "json", "csv", "ndjson")


def number(value) -> str:
    """A figure for a table cell: seven significant digits, ``inf`` as is."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.7g}"


def quiet(result: Result) -> str:
    """The headline alone, as Python's shortest round-trip repr."""
    return repr(float(result.value)) + "\n"


def to_json(result: Result, *, per_row: bool, document: dict | None = None) -> str:
    """The JSON document (``document`` if it was built already, with the checks' outcomes)."""
    doc = document if document is not None else result.document(per_row=per_row)
    return json.dumps(json_safe(doc), allow_nan=False, indent=2) + "\n"


def _row_values(result: Result):
    names = list(result.per_row)
    columns = [result.per_row[name].tolist() for name in names]
    return names, zip(*columns) if columns else iter(())


def to_csv(result: Result) -> str:
    import csv

    names, rows = _row_values(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", *names])
    for index, values in enumerate(rows):
        writer.writerow([index, *(repr(v) if isinstance(v, float) else v for v in values)])
    return buffer.getvalue()


def to_ndjson(result: Result) -> str:
    names, rows = _row_values(result)
    lines = [json.dumps(json_safe({"row": index, **dict(zip(names, values))}), allow_nan=False)
             for index, values in enumerate(rows)]
    return "\n".join(lines) + ("\n" if lines else "")


# A width below this (COLUMNS=0 or 1, a mis-set terminal) is no width at all: tables are drawn at USABLE_WIDTH.
SMALLEST_WIDTH, USABLE_WIDTH = 20, 80
# With --format table on a stream that cannot hold Unicode (PYTHONIOENCODING=ascii): the words for the symbols.
ASCII_SYMBOLS = str.maketrans({"‖": "||", "σ": "sigma", "±": "+/-", "×": "x", "—": "-", "–": "-", "Δ": "delta ",
                               "π": "pi", "μ": "mu", "Σ": "sum ", "≥": ">=", "≤": "<=", "∩": "&", "½": "1/2",
                               "²": "^2", "→": "->", "…": "...", "·": "*", "≠": "!=", "√": "sqrt", "∞": "inf"})


class _Text(io.StringIO):
    """A buffer that tells rich which characters the final stream can hold (rich draws ASCII boxes for ascii)."""

    def __init__(self, encoding: str):
        super().__init__()
        self._encoding = encoding

    def __getattribute__(self, name: str):
        # StringIO's ``encoding`` is a read-only slot (None); rich reads it to choose its boxes.
        if name == "encoding":
            return object.__getattribute__(self, "_encoding")
        return super().__getattribute__(name)


class _Printer:
    """Prints tables at the console's width, but never narrower than a table's longest word.

    rich shrinks a table to the width it is given and then cuts its cells
    (``0.04…``); a figure must never lose a digit, so each table gets at
    least the width at which every word — every number — fits whole.
    """

    def __init__(self, console):
        self.console = console
        width = console.width
        self.width = width if width >= SMALLEST_WIDTH else USABLE_WIDTH

    def print(self, table) -> None:
        if isinstance(table, str):  # a table already laid out as lines (see _whole_cells)
            self.print_plain(table)
            return
        self.console.width = 1 << 16
        needed = self.console.measure(table).minimum
        self.console.width = max(self.width, needed)
        self.console.print(table)

    def print_plain(self, text: str) -> None:
        """Lines as they are: no markup, no wrapping, no colour (a histogram drawn in characters)."""
        from rich.text import Text

        self.console.width = 1 << 16
        self.console.print(Text(text), no_wrap=True, crop=False)


def _ascii_table(table_class):
    """rich's Table, with titles, headers and cells translated by :data:`ASCII_SYMBOLS` before layout."""

    def plain(text):
        return text.translate(ASCII_SYMBOLS) if isinstance(text, str) else text

    class AsciiTable(table_class):
        def __init__(self, *columns, title=None, **options):
            super().__init__(*columns, title=plain(title), **options)

        def add_column(self, header="", *args, **options):
            super().add_column(plain(header), *args, **options)

        def add_row(self, *cells, **options):
            super().add_row(*(plain(cell) for cell in cells), **options)

    return AsciiTable


def to_table(result: Result, *, per_row: bool, color: bool, width: int | None = None,
             ascii_only: bool = False) -> str:
    """The rich rendering, as text (with ANSI colour only when ``color``; ASCII only with ``ascii_only``)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RichTable

    # The same class, with its words spelt in ASCII where the stream cannot hold the symbols.
    Table = _ascii_table(RichTable) if ascii_only else RichTable  # noqa: N806
    buffer = _Text("ascii" if ascii_only else "utf-8")
    console = _Printer(Console(file=buffer, force_terminal=color, no_color=not color, width=width,
                               highlight=False, soft_wrap=False))
    unit = f" {result.unit.name}" if result.value_has_unit else ""
    head = Table(box=box.SIMPLE_HEAD, show_header=False, title=f"klcli {result.command}", title_justify="left",
                 pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row(_untrusted(result.headline), f"[bold]{number(result.value)}[/bold]{unit}")  # (a candidate's name)
    candidates = _candidates(result)
    # With several candidates their own figures are in the leaderboard; the head keeps the shared ones.
    own = set(candidates[0]) if candidates and len(candidates) > 1 else set()
    for key, value in result.figures.items():
        if key in own:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            head.add_row(key, number(value))
        elif isinstance(value, str):
            head.add_row(key, value)
    head.add_row("rows", str(result.rows))
    for source in result.inputs:
        shape = "×".join("?" if s is None else str(s) for s in source["shape"])
        where = _untrusted(str(source["operand"]))
        head.add_row(f"{source['role']}", f"{where}  [dim]{source.get('kind', '')} {shape} {source['dtype']}[/dim]")
    for note in result.notes + result.warnings:
        head.add_row("note", _untrusted(note))
    console.print(head)
    if candidates:
        for table in _leaderboard(Table, box, result, candidates, ascii_only):
            console.print(table)

    columns = result.metrics or {result.summary_name: result.summary}
    if candidates and len(candidates) > 1:  # one column per candidate: its D(base‖test)
        columns = {entry["name"]: entry["kl"] for entry in candidates}
    if (result.summary.get("count") or 0) > 1:
        unit = f" ({result.unit.name})" if result.information else ""  # reference's tail masses have none
        title = f"summary over {result.summary_over}{unit}"
        stats = Table(box=box.SIMPLE_HEAD, title=title,
                      title_justify="left", pad_edge=False)
        stats.add_column("statistic")
        for name in columns:
            # (a candidate's name may come from a file; a shard name is folded, never elided)
            stats.add_column(_untrusted(name), justify="right", overflow="fold")
        for key in SUMMARY_KEYS:
            stats.add_row(key.replace("_", "."), *(number(m.get(key)) for m in columns.values()))
        if any("argmax_shard" in m for m in columns.values()):  # a sharded input: where the argmax row lies
            stats.add_row("argmax shard", *(_untrusted(_shard_name(m.get("argmax_shard", "—")))
                                            for m in columns.values()))
            stats.add_row("shard row", *(number(m.get("argmax_row_in_shard")) for m in columns.values()))
        console.print(stats)
        for name, histogram in _histograms(result.figures):
            console.print_plain(histogram_text(histogram, result.unit.name, name))

    estimates = _mean_figures(result.figures)
    if estimates:
        table = Table(box=box.SIMPLE_HEAD, title=f"estimates ({result.unit.name})", title_justify="left",
                      pad_edge=False)
        for column in ("figure", "mean", "stderr"):
            table.add_column(column, justify="left" if column == "figure" else "right")
        for name, figure in estimates:
            table.add_row(name, number(figure.get("mean", figure.get("value"))), number(figure.get("stderr")))
        console.print(table)

    for key, value in result.figures.items():
        if key == "tests" or (own and key in own):
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            console.print(_listing(Table, box, key, value))
    if own:
        for table in _candidate_listings(Table, box, candidates, ascii_only):
            console.print(table)

    if per_row and result.per_row:
        rows = Table(box=box.SIMPLE_HEAD, title="per row", title_justify="left", pad_edge=False)
        rows.add_column("row", justify="right")
        names, values = _row_values(result)
        for name in names:
            rows.add_column(name, justify="right")
        for index, row in enumerate(values):
            rows.add_row(str(index), *(number(v) for v in row))
        console.print(rows)

    if result.checks:
        checks = Table(box=box.SIMPLE_HEAD, title="checks", title_justify="left", pad_edge=False)
        for column in ("check", "actual", "threshold", "result"):
            checks.add_column(column)
        for check in result.checks:
            verdict = "[green]pass[/green]" if check["passed"] else "[bold red]FAIL[/bold red]"
            checks.add_row(check["expr"], number(check["actual"]), number(check["threshold"]), verdict)
        console.print(checks)
    text = buffer.getvalue()
    return text.translate(ASCII_SYMBOLS) if ascii_only else text


def _nested(value) -> bool:
    """A figure that is no cell of a listing: a dictionary, or a list of anything but numbers."""
    return isinstance(value, dict) or (isinstance(value, list) and not all(isinstance(v, int) for v in value))


def _shard_name(path) -> str:
    """A shard as the table names it: its file name (the JSON keeps the path as the glob gave it)."""
    import os

    return os.path.basename(str(path)) or str(path)


def _cell(entry: dict, column: str) -> str:
    """A listing's cell: a figure, a (file-derived) name — a shard by its file name — or a token id with its text."""
    value = entry.get(column)
    if isinstance(value, list):  # an index such as entropy --by-leading's [i, j], written i,j
        return ",".join(str(item) for item in value)
    if column == "shard":
        return _untrusted(_shard_name(value))
    if isinstance(value, str):
        return _untrusted(value)
    text = entry.get(f"{column}_text")
    if text is not None:
        from klcli.io.tokenizer import token_shown

        return f"{number(value)} {_untrusted(token_shown(text))}"
    return number(value)


# The histogram's bar, in characters: '#' survives any encoding, redirection and the absence of colour.
HISTOGRAM_BAR = 40


def _histograms(figures: dict) -> list[tuple[str | None, dict]]:
    """Each candidate's KL histogram: one per entry of ``tests`` when there are several, else the result's own."""
    tests = figures.get("tests")
    if isinstance(tests, list) and len(tests) > 1:
        return [(str(test.get("name")), test["kl_histogram"]) for test in tests
                if isinstance(test, dict) and isinstance(test.get("kl_histogram"), dict)]
    histogram = figures.get("kl_histogram")
    return [(None, histogram)] if isinstance(histogram, dict) else []


def histogram_text(histogram: dict, unit: str, name: str | None = None) -> str:
    """Per-position KL in log-spaced bins, as plain text lines of at most 80 characters.

    One line a bin, ``[lo, hi)`` (the last ``[lo, hi]``), a bar of ``#``
    scaled to the fullest bin (any non-empty bin shows at least one), and the
    count; exact zeros and infinite values on lines of their own.
    """
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    zero, infinite = histogram.get("zero") or 0, histogram.get("infinite") or 0
    lines = [(f"[{edges[i]:.3g}, {edges[i + 1]:.3g}" + ("]" if i == len(counts) - 1 else ")"), count)
             for i, count in enumerate(counts)]
    lines.insert(0, ("0 (identical)", zero))
    if infinite:
        lines.append(("inf", infinite))
    total = sum(count for _, count in lines)
    fullest = max((count for _, count in lines), default=0) or 1
    about = f" of {_untrusted(name)}" if name else ""
    out = [f"KL histogram{about} ({unit}, {total} positions, log-spaced bins)"]
    for label, count in lines:
        bar = "#" * (max(1, round(HISTOGRAM_BAR * count / fullest)) if count else 0)
        out.append(f" {label:>22} |{bar:<{HISTOGRAM_BAR}} {count:>10}")
    return "\n".join(out) + "\n"


def _candidates(result: Result) -> list[dict] | None:
    """compare's candidates (``tests``), each a dictionary with its ``name``; None for other results."""
    tests = result.figures.get("tests")
    if isinstance(tests, list) and tests and all(isinstance(t, dict) and "name" in t for t in tests):
        return tests
    return None


def _short(value, digits: int = 4) -> str:
    """A leaderboard figure: ``digits`` significant digits (every figure in full is in the JSON), ``—`` if undefined."""
    if value is None or isinstance(value, str):
        return "—" if value is None else value
    if math.isinf(value) or math.isnan(value):
        return number(value)
    return f"{value:.{digits}g}"


def _plus_minus(value, stderr, scale: float = 1.0, digits: int = 4) -> str:
    if value is None or isinstance(value, str):
        return _short(value)
    if stderr is None or isinstance(stderr, str):
        return _short(value * scale, digits)
    spread = stderr * scale
    # Two significant digits, but never an exponent for a spread of 10 or more (± 154, not ± 1.5e+02).
    shown_spread = f"{spread:.0f}" if math.isfinite(spread) and abs(spread) >= 10 else _short(spread, 2)
    return f"{_short(value * scale, digits)} ± {shown_spread}"


def _ranked(result: Result, candidates: list[dict]) -> list[dict]:
    """The candidates in the leaderboard's order (``ranking.names``), else as given."""
    names = (result.figures.get("ranking") or {}).get("names")
    by_name = {entry["name"]: entry for entry in candidates}
    return [by_name[name] for name in names if name in by_name] if names else candidates


def _leaderboard(Table, box, result: Result, candidates: list[dict],  # noqa: N803 (a class, passed)
                 ascii_only: bool = False) -> list:
    """One row per candidate, best first: the divergences and top-1 agreement; with labels, a perplexity table."""
    ranking = result.figures.get("ranking") or {}
    title = (f"leaderboard ({result.unit.name}; by {ranking.get('key', 'kl.mean')}, "
             f"{ranking.get('order', 'ascending')})")
    ranked = _ranked(result, candidates)
    # The headline to four significant digits, the other columns to three: the table fits 80 columns.
    rows = [[entry["name"], _plus_minus(entry["kl"]["mean"], entry["kl"]["stderr"]), _short(entry["kl"]["p99"], 3),
             _short(entry["kl"]["max"], 3), _plus_minus(entry["top1_agreement"], entry["top1_agreement_stderr"], 100.0),
             _short(entry["js"]["mean"], 3), _short(entry["tv"]["mean"], 3)] for entry in ranked]
    tables = [_whole_cells(Table, box, title, ("candidate", "mean KL ± se", "KL p99", "KL max", "top-1 % ± se", "JS",
                                               "TV"), rows, ascii_only)]
    if "ppl_test" in candidates[0]:
        base = _plus_minus(result.figures.get("ppl_base"), result.figures.get("ppl_base_stderr"))
        rows = [[entry["name"], _plus_minus(entry["ppl_test"], entry.get("ppl_test_stderr")),
                 _plus_minus(entry["delta_ppl"], entry.get("delta_ppl_stderr")), _short(entry["ppl_ratio"], 6),
                 _plus_minus((entry.get("delta_p") or {}).get("rms"), (entry.get("delta_p") or {}).get("rms_stderr"),
                             100.0)] for entry in ranked]
        tables.append(_whole_cells(Table, box, f"perplexity (PPL(base) {base})",
                                   ("candidate", "PPL(test) ± se", "ΔPPL ± se", "PPL ratio", "RMS Δp % ± se"), rows,
                                   ascii_only))
    return tables


def _whole_cells(Table, box, title: str, headers, rows: list[list[str]], ascii_only: bool, *,  # noqa: N803
                 first_left: bool = True, names_first: bool = True) -> str:
    """A table whose cells and headers are never wrapped nor cut, as plain lines: each column as wide as its
    widest cell, two spaces between columns (the same layout whatever rich's version).

    The headers and the first column may be names from the command line or files: shown safely.
    """
    from rich.cells import cell_len

    from klcli.errors import shown

    # The text as it will be printed: names made safe, and in ASCII ± spelt +/-.
    printed = [[shown(header) for header in headers]] + [[shown(row[0]) if names_first else row[0], *row[1:]]
                                                         for row in rows]
    if ascii_only:
        printed = [[cell.translate(ASCII_SYMBOLS) for cell in row] for row in printed]
        title = title.translate(ASCII_SYMBOLS)
    widths = [max(cell_len(row[index]) for row in printed) for index in range(len(headers))]
    legend: list[str] = []
    if names_first and 1 + sum(widths) + 2 * (len(widths) - 1) > TABLE_WIDTH and len(printed) > 1:
        # Long names (files, safetensors keys) would push the figures past 80 columns: numbered, with a legend.
        legend = ["", *(f" {number}  {row[0]}" for number, row in enumerate(printed[1:], 1))]
        printed = [["#", *printed[0][1:]], *([str(number), *row[1:]] for number, row in enumerate(printed[1:], 1))]
        widths[0] = max(cell_len(row[0]) for row in printed)

    def line(cells: list[str]) -> str:
        padded = [cell + " " * (width - cell_len(cell)) if index == 0 and first_left
                  else " " * (width - cell_len(cell)) + cell
                  for index, (cell, width) in enumerate(zip(cells, widths))]
        return " " + "  ".join(padded)

    rule = " " + ("-" if ascii_only else "─") * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, "", line(printed[0]), rule, *(line(row) for row in printed[1:]), *legend, ""]) + "\n"


# The width the whole-cell tables keep to (the terminals and CI logs they are read in): wider names are numbered.
TABLE_WIDTH = 80


def _candidate_listings(Table, box, candidates: list[dict], ascii_only: bool) -> list:  # noqa: N803
    """With several candidates: KL and agreement by the base's confidence side by side, and each one's worst."""
    from klcli.errors import shown

    tables = []
    buckets = candidates[0].get("by_confidence") or []
    if buckets:
        rows = []
        for i, bucket in enumerate(buckets):
            cells = []
            for entry in candidates:
                own = entry["by_confidence"][i]
                cells.append("—" if own["kl_mean"] is None else
                             f"{_short(own['kl_mean'])} ({_short(100.0 * own['top1_agreement'], 3)})")
            closing = "]" if i == len(buckets) - 1 else ")"
            rows.append([f"[{bucket['lo']:g}, {bucket['hi']:g}{closing}", str(bucket["count"]), *cells])
        tables.append(_whole_cells(Table, box, "mean KL (top-1 agreement %) by the base's top-1 probability",
                                   ("p(top-1)", "count", *(entry["name"] for entry in candidates)), rows, ascii_only))
    for entry in candidates:
        worst = entry.get("worst") or []
        if worst:
            tables.append(_listing(Table, box, f"worst: {shown(entry['name'])}", worst))
    return tables


def _listing(Table, box, title: str, entries: list[dict]) -> str:  # noqa: N803
    """A list of records as a table of whole cells (never cut, see :func:`_whole_cells`); a column undefined
    (null) in every record is left out, token text goes beside its id (see _cell), and nested figures (a
    candidate's summaries) are no cell."""
    from rich.text import Text

    columns = [column for column in entries[0] if not column.endswith("_text") and not _nested(entries[0][column])
               and any(entry.get(column) is not None for entry in entries)]
    # (_cell escapes names for rich markup; these lines are printed as they are, so the escape is undone)
    rows = [[Text.from_markup(_cell(entry, column)).plain for column in columns] for entry in entries]
    return _whole_cells(Table, box, title, columns, rows, False, first_left=False, names_first=False)


def _mean_figures(figures: dict) -> list[tuple[str, dict]]:
    """Figures given as a mean (or a value) and its standard error (rlhf's estimators, gaussian --fit's knn)."""
    found = []
    for key, value in figures.items():
        if isinstance(value, dict) and ("mean" in value or "value" in value) and "stderr" in value:
            found.append((key, value))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) and "mean" in v for v in value.values()):
            found.extend((f"{key}.{name}", v) for name, v in value.items())
    return found


def render(result: Result, fmt: str, *, per_row: bool, color: bool = False, width: int | None = None,
           ascii_only: bool = False, document: dict | None = None) -> str:
    if fmt == "json":
        return to_json(result, per_row=per_row, document=document)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "ndjson":
        return to_ndjson(result)
    return to_table(result, per_row=per_row, color=color, width=width, ascii_only=ascii_only)


class Progress:
    """A progress bar on standard error for work that takes more than about a second.

    Drawn only when enabled (standard error is a terminal and ``--no-progress``
    was not given); rich is imported only once the bar is shown.
    """

    DELAY = 1.0

    def __init__(self, total: int | None, enabled: bool, description: str = "rows"):
        self.total, self.enabled, self.description = total, enabled, description
        self.started = time.monotonic()
        self._bar: Any = None  # a rich Progress, once shown
        self._task: Any = None

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self.started < self.DELAY:
                return
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _untrusted(text: str) -> str:
    """A path or a note quoting file-derived names: no terminal escapes, and brackets shown, not read as markup."""
    from rich.markup import escape

    from klcli.errors import shown

    return escape(shown(text))
