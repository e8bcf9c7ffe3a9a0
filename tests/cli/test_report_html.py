"""compare --html: one self-contained page, its figures the JSON's, every name escaped; rendered by Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest

from klcli.errors import shown
from klcli.report_html import html_report


class Page(HTMLParser):
    """Every tag with its attributes, every table cell with its attributes and text, and the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.cells: list[tuple[dict, str]] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._attrs: dict = {}
        self._row: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._attrs = [], dict(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            self.cells.append((self._attrs, text))
            if self._row is not None:
                self._row.append(text)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def flatten(node, path="", out=None):
    """The document's leaves by dotted path (lists of numbers whole, other lists indexed), written for the test."""
    out = {} if out is None else out
    numeric = (int, float, type(None))
    if isinstance(node, dict):
        for key, value in node.items():
            flatten(value, f"{path}.{key}" if path else key, out)
    elif isinstance(node, list) and not all(isinstance(v, numeric) or v in ("inf", "-inf") for v in node):
        for index, value in enumerate(node):
            flatten(value, f"{path}[{index}]", out)
    else:
        out[path] = node
    return out


def parsed(text: str, like):
    """A value cell of the figures table read back, as the type the JSON holds."""
    if isinstance(like, str):
        return text
    if isinstance(like, list):
        inner = text[1:-1]
        items = [] if not inner else inner.split(", ")
        return [item if isinstance(old, str) else json.loads(item) for item, old in zip(items, like)]
    return json.loads(text)


def figures_table(page: Page) -> dict[str, str]:
    start = next(i for i, row in enumerate(page.rows) if row == ["key", "value"])
    return {row[0]: row[1] for row in page.rows[start + 1:]}


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(0, 2, size=(3, 10, 16))
    near = base + rng.normal(0, 0.3, size=base.shape)
    far = base + rng.normal(0, 1.5, size=base.shape)
    labels = rng.integers(0, 16, size=(3, 10))
    labels[1, 4] = -100
    for name, array in (("base", base), ("near", near), ("far", far), ("labels", labels)):
        np.save(tmp_path / f"{name}.npy", array)
    tokens = "\n".join(f"tok{i}" for i in range(16)) + "\n"
    (tmp_path / "vocab.txt").write_text(tokens)
    return tmp_path


def _args(folder, test="near.npy"):
    return ("compare", folder / "base.npy", folder / test, "--labels", folder / "labels.npy",
            "--vocab", folder / "vocab.txt")


def test_html_is_self_contained_and_its_figures_are_the_json(cli, runs):
    report = runs / "report.html"
    run = cli(*_args(runs), "--json", "--html", report, "--check", "kl.p99<10")
    assert (run.code, run.err) == (0, "")
    doc = run.json()
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for forbidden in ("http", "src=", "url(", "@import", "<script", "<link", "<iframe", "<img"):
        assert forbidden not in text.lower(), forbidden
    page = Page(text)
    assert all(not attrs.get("href") or attrs["href"].startswith("#") for _, attrs in page.tags)
    assert sum(tag == "svg" for tag, _ in page.tags) == 3  # histogram, by confidence, sequence
    table = figures_table(page)
    leaves = flatten({key: value for key, value in doc.items() if key != "per_row"})
    assert set(table) == set(leaves)
    for key, value in leaves.items():
        expected = shown(value) if isinstance(value, str) else value
        assert parsed(table[key], value) == expected, key
    assert table["worst[0].base_top1_text"] == f"tok{doc['worst'][0]['base_top1']}"
    board = {attrs["data-key"]: json.loads(attrs["data-value"]) for attrs, _ in page.cells if "data-key" in attrs}
    assert board == {"kl.mean": doc["kl"]["mean"], "kl.p99": doc["kl"]["p99"], "kl.max": doc["kl"]["max"],
                     "top1_agreement": doc["top1_agreement"], "js.mean": doc["js"]["mean"],
                     "tv.mean": doc["tv"]["mean"], "ppl_test": doc["ppl_test"], "ppl_ratio": doc["ppl_ratio"],
                     "delta_ppl": doc["delta_ppl"]}
    assert "all 1 checks passed" in "".join(page.text)


def test_html_with_json_and_output_file_together(cli, runs):
    report, output = runs / "report.html", runs / "out.json"
    report.write_text("old")
    run = cli(*_args(runs), "--json", "-o", output, "--html", report)
    assert (run.code, run.out, run.err) == (0, "", "")
    doc = json.loads(output.read_text())
    assert f"{doc['kl']['mean']!r}" in report.read_text()
    assert not [name for name in os.listdir(runs) if name.startswith(".klcli-")]
    bits = cli(*_args(runs), "--bits", "--html", report)
    assert bits.code == 0 and "KL histogram" in bits.out
    assert "figures in bits" in report.read_text()


@pytest.mark.parametrize("target, message", [
    ("base.npy", "--html {folder}/base.npy: is one of the inputs; klcli never overwrites its inputs"),
    ("vocab.txt", "--html {folder}/vocab.txt: is one of the inputs; klcli never overwrites its inputs"),
    ("gone/r.html", "--html {folder}/gone/r.html: the folder {folder}/gone does not exist"),
    (".", "--html {folder}/.: is a directory; name a file"),
])
def test_html_target_refused_before_the_work(cli, runs, target, message):
    run = cli(*_args(runs), "--html", f"{runs}/{target}")
    assert (run.code, run.out) == (2, "")
    assert run.err == f"klcli: error: {message.format(folder=runs)}\n"


def test_html_and_output_the_same_file_or_stdout(cli, runs):
    same = runs / "r.html"
    run = cli(*_args(runs), "-o", same, "--html", same)
    assert (run.code, run.err) == (2, f"klcli: error: --html {same} and -o {same} name the same file; give each "
                                      "its own\n")
    run = cli(*_args(runs), "--html", "-")
    assert (run.code, run.err) == (2, "klcli: error: --html '-': give a file name; standard output holds the table "
                                      "or JSON\n")


def test_hostile_file_name_and_token_are_escaped(cli, runs):
    hostile = runs / "<img src=x onerror=alert(1)>&\"'\x1b]0;t\x07.npy"
    shutil.copy(runs / "near.npy", hostile)
    (runs / "vocab.txt").write_text("".join(f"<script>alert({i})</script>\x1b[2J\n" for i in range(16)))
    report = runs / "r.html"
    run = cli("compare", runs / "base.npy", hostile, "--vocab", runs / "vocab.txt", "--html", report, "--json")
    assert run.code == 0
    text = report.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text
    page = Page(text)
    assert {tag for tag, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2",
                                             "h3", "p", "table", "tr", "th", "td", "section", "span", "svg", "line",
                                             "text", "rect", "polyline", "circle", "b", "details", "summary", "ul",
                                             "li"}
    assert all(not name.startswith("on") and name not in ("src", "href") for _, attrs in page.tags for name in attrs)
    words = "".join(page.text)
    assert shown(str(hostile)) in words
    assert '"<script>alert(0)</script>\\x1b[2J"' in words or any(
        f'"<script>alert({i})</script>\\x1b[2J"' in words for i in range(16))


def _two_candidates(cli, runs) -> dict:
    """A several-candidate document as compare will write it: `tests` entries with each one's figures."""
    near, far = (cli(*_args(runs, name), "--json").json() for name in ("near.npy", "far.npy"))
    keys = [k for k in near if k not in ("command", "version", "unit", "base", "value", "rows", "inputs", "summary",
                                          "notes", "checks", "passed")]
    doc = dict(near)
    doc["tests"] = [{"name": "far", **{k: far[k] for k in keys}}, {"name": "near", **{k: near[k] for k in keys}}]
    buckets = [{"lo": i / 10, "hi": (i + 1) / 10, "count": i, "kl_mean": 0.01 * i, "top1_agreement": 0.5}
               for i in range(10)]
    doc["tests"][0]["by_confidence"] = buckets
    return doc


def test_several_candidates_leaderboard_sorted_and_a_histogram_each(cli, runs):
    doc = _two_candidates(cli, runs)
    page = Page(html_report(doc))
    start = next(i for i, row in enumerate(page.rows) if row[:2] == ["#", "candidate"])
    board = page.rows[start + 1:start + 3]
    assert [row[1] for row in board] == ["near", "far"]  # lower mean KL first
    assert doc["tests"][1]["kl"]["mean"] < doc["tests"][0]["kl"]["mean"]
    assert sum(tag == "svg" for tag, _ in page.tags) == 4  # two histograms, by confidence, sequence
    assert sum(tag == "polyline" for tag, _ in page.tags) == 2
    table = figures_table(page)
    assert json.loads(table["tests[0].kl.mean"]) == doc["tests"][0]["kl"]["mean"]
    assert json.loads(table["tests[0].by_confidence[3].kl_mean"]) == 0.03


def _png(path):
    """(width, height, rows that vary): a PNG read with zlib; a row varies if a pixel differs from its
    neighbours (a non-zero filter residue, or unequal pixels in an unfiltered row)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, header = 8, [], b""
    while at < len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind == b"IHDR":
            header = data[at + 8:at + 8 + length]
        elif kind == b"IDAT":
            chunks.append(data[at + 8:at + 8 + length])
        at += 12 + length
    width, height, depth, colour = (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big"),
                                    header[8], header[9])
    assert depth == 8 and header[12] == 0  # 8 bits a channel, not interlaced
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(height, 1 + width * channels)
    varying = 0
    for row in raw[1:]:
        pixels = row[1 + channels:] if row[0] else row[1:].reshape(width, channels)
        varying += bool(pixels.any()) if row[0] else bool((pixels != pixels[0]).any())
    return width, height, varying


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium); the "
                                             "HTML report is not rendered")
def test_chromium_renders_the_report(cli, runs, tmp_path):
    doc = _two_candidates(cli, runs)
    (tmp_path / "report.html").write_text(html_report(doc), encoding="utf-8")
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    shots = {}
    for name in ("report", "blank"):
        png = tmp_path / f"{name}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,2000",
                        f"file://{tmp_path / name}.html"], check=True, capture_output=True, timeout=180)
        shots[name] = (png.stat().st_size, *_png(png))
    size, width, height, varying = shots["report"]
    assert (width, height) == (1200, 2000)
    assert shots["blank"][3] == 0  # the check itself: a blank page has no varying row
    assert varying > 0.3 * height, varying
    assert size > 20_000 and size > 5 * shots["blank"][0]


def test_html_written_when_a_check_fails(cli, runs):
    report = runs / "failed.html"
    run = cli(*_args(runs, "far.npy"), "--html", report, "--check", "kl.mean<0.001")
    assert run.code == 1 and run.err.startswith("klcli: check failed: kl.mean<0.001")
    page = Page(report.read_text())
    assert "1 of 1 checks FAILED" in "".join(page.text)
    assert ["kl.mean<0.001"] == [row[0] for row in page.rows if row and row[-1] == "FAIL"]


def test_merge_writes_the_html_one_run_writes(cli, runs):
    """compare's partials merged with --html: the page one run writes (its inputs' paths are the same)."""
    assert cli(*_args(runs), "--html", runs / "one.html", "-q").code == 0
    for k in (1, 2, 3):
        run = cli(*_args(runs), "--partial", runs / f"p{k}.klp", "--piece", f"{k}/3")
        assert run.code == 0, run.err
    run = cli("merge", runs / "p3.klp", runs / "p1.klp", runs / "p2.klp", "--html", runs / "merged.html", "-q")
    assert run.code == 0, run.err
    assert (runs / "merged.html").read_text(encoding="utf-8") == (runs / "one.html").read_text(encoding="utf-8")
    run = cli("merge", runs / "p1.klp", runs / "p2.klp", runs / "p3.klp", "--html", runs / "p1.klp")
    assert run.code == 2 and "klcli: error: --html" in run.err  # never over an input
