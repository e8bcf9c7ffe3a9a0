"""Old against new: every golden invocation prints the figures it printed when the goldens were made.

Figures are compared key by key (JSON), cell by cell (CSV, NDJSON) or as the one
number (-q), each within 1e-12 relative; tables (pinned width, no colour) and
error lines are compared as text. See make_golden.py for how the goldens are made.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from tests.golden import make_golden

GOLDEN = json.loads(make_golden.GOLDEN.read_text())
RELATIVE = 1e-12


# The fast tier runs one case of each command and output format; the slow tier runs them all.
FAST = ("kl csv json", "kl csv table", "kl npy csv format", "kl npy ndjson", "kl inline -q", "kl bench",
        "kl logits both bits", "xent csv bits", "xent labels shift bits", "js weights", "perplexity lm bits shift",
        "perplexity logprobs group", "compare bench labels ignored", "compare samples table", "rlhf reward",
        "rlhf exact", "gaussian table file both", "gaussian full", "error rows")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    return folder, make_golden.prepare(folder)


def close(old, new, where: str) -> None:
    """``new`` equals ``old``: same keys and types, numbers within 1e-12 relative (1e-300 absolute)."""
    if isinstance(old, bool) or old is None or isinstance(old, str):
        assert new == old, where
    elif isinstance(old, (int, float)):
        assert isinstance(new, (int, float)) and not isinstance(new, bool), where
        if isinstance(old, int) and isinstance(new, int):
            assert new == old, where
        elif math.isinf(old) or math.isnan(old):
            assert repr(float(new)) == repr(float(old)), where
        else:
            assert abs(new - old) <= RELATIVE * abs(old) + 1e-300, f"{where}: {new!r} vs {old!r}"
    elif isinstance(old, dict):
        assert isinstance(new, dict) and list(new) == list(old), f"{where}: keys {list(new)} vs {list(old)}"
        for key in old:
            close(old[key], new[key], f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), f"{where}: length {len(new)} vs {len(old)}"
        for index, (a, b) in enumerate(zip(old, new)):
            close(a, b, f"{where}[{index}]")
    else:
        raise AssertionError(f"{where}: unexpected {type(old)}")


def _cell(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def compare_output(fmt: str, old: str, new: str, where: str) -> None:
    if fmt == "json":
        close(json.loads(old), json.loads(new), where)
    elif fmt == "quiet":
        close(float(old), float(new), where)
    elif fmt == "csv":
        old_rows, new_rows = list(csv.reader(io.StringIO(old))), list(csv.reader(io.StringIO(new)))
        close([[_cell(c) for c in row] for row in old_rows], [[_cell(c) for c in row] for row in new_rows], where)
    elif fmt == "ndjson":
        close([json.loads(line) for line in old.splitlines()], [json.loads(line) for line in new.splitlines()], where)
    else:
        assert new == old, where


@pytest.mark.parametrize("name", [name if name in FAST else pytest.param(name, marks=pytest.mark.slow)
                                  for name in GOLDEN])
def test_golden(folder, name):
    where, bench = folder
    old = GOLDEN[name]
    new = make_golden.run_case(where, make_golden.cases("samples", bench)[name])
    assert new["argv"] == old["argv"]
    assert new["code"] == old["code"], new["err"]
    if old["code"] == 2:
        assert new["err"] == old["err"]
    else:
        compare_output(old["format"], old["out"], new["out"], name)


def test_every_command_and_format_is_covered():
    assert set(FAST) <= set(GOLDEN)
    commands = {case["argv"][0] for case in GOLDEN.values()}
    formats = {case["format"] for case in GOLDEN.values()}
    assert commands == {"kl", "xent", "js", "perplexity", "compare", "rlhf", "gaussian"}
    assert formats == {"json", "quiet", "csv", "ndjson", "table"}
