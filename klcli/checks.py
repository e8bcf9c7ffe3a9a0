"""``--check KEY OP NUMBER``: assertions on a result, for CI gates (SPEC §5)."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from klcli.errors import CheckError, shown

OPERATORS = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
# Keys that hold no figures to check.
_NOT_FIGURES = {"inputs", "checks", "per_row", "notes", "version", "command", "unit", "passed", "base"}


@dataclass(frozen=True)
class Check:
    expr: str
    key: str
    op: str
    threshold: float


def parse_check(expr: str) -> Check:
    """Parse ``KEY OP NUMBER``.

    Examples
    --------
    >>> parse_check("kl.p99 <= 0.2")
    Check(expr='kl.p99 <= 0.2', key='kl.p99', op='<=', threshold=0.2)
    """
    match = _EXPRESSION.match(expr)
    threshold = None
    if match:
        try:
            threshold = float(match.group(3))
        except ValueError:
            threshold = None
    if threshold is not None and threshold != threshold:  # NaN: every comparison with it is False
        raise CheckError(f"--check {expr!r}: the threshold is NaN, which no value can be compared with; give a "
                         "number (inf is allowed: 'value<inf' asserts the figure is finite)")
    if threshold is None:
        raise CheckError(f"--check {expr!r}: write KEY OP NUMBER, e.g. 'value<0.1' or 'kl.p99<=0.2' "
                         f"(OP is one of {' '.join(OPERATORS)})")
    return Check(expr.strip(), match.group(1), match.group(2), threshold)


def figure_keys(doc: dict, prefix: str = "") -> list[str]:
    """Every dotted key of ``doc`` that holds a number."""
    keys = []
    for key, value in doc.items():
        if not prefix and key in _NOT_FIGURES:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            keys.extend(figure_keys(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            keys.append(path)
    return keys


def available(doc: dict) -> str:
    """The figure keys, grouped for a message: ``value, rows, kl.{mean,p99,…}``."""
    groups: dict[str, list[str]] = {}
    for key in figure_keys(doc):
        head, _, leaf = key.rpartition(".")
        groups.setdefault(head, []).append(leaf)
    return ", ".join(", ".join(leaves) if not head else f"{head}.{{{','.join(leaves)}}}"
                     for head, leaves in groups.items())


MISSING = object()  # what lookup returns for a key the document does not hold


def lookup(doc: dict, key: str):
    """The value at dotted ``key`` of ``doc`` (a bare name that is not a top-level key: inside ``summary``), or MISSING.

    Examples
    --------
    >>> lookup({"kl": {"p99": 0.2}}, "kl.p99"), lookup({"summary": {"max": 3}}, "max"), lookup({}, "x") is MISSING
    (0.2, 3, True)
    """
    node = doc
    parts = key.split(".")
    if parts[0] not in doc and len(parts) == 1 and isinstance(doc.get("summary"), dict):
        node = doc["summary"]
    for part in parts:
        if not isinstance(node, dict) or part not in node or (node is doc and part in _NOT_FIGURES):
            return MISSING
        node = node[part]
    return node


# A document with several candidates (compare's ``tests``) is checked once per candidate, over the document with
# that candidate's figures in place of the first's: its ``value`` and ``summary`` are those of this metric.
CANDIDATE_HEADLINE = "kl"


def candidate_views(doc: dict) -> list[tuple[str | None, dict]]:
    """``(candidate name, document to check)`` for each candidate of ``doc``'s ``tests``; else ``[(None, doc)]``."""
    tests = doc.get("tests")
    if not (isinstance(tests, list) and tests and all(isinstance(t, dict) and "name" in t for t in tests)):
        return [(None, doc)]
    shared = {key: value for key, value in doc.items() if key not in ("tests", "ranking")}
    views = []
    for entry in tests:
        view = {**shared, **{key: value for key, value in entry.items() if key != "name"}}
        headline = entry.get(CANDIDATE_HEADLINE)
        if isinstance(headline, dict):
            view["summary"], view["value"] = headline, headline.get("mean")
        views.append((entry["name"], view))
    return views


def _resolve(doc: dict, key: str):
    node = doc
    parts = key.split(".")
    if parts[0] not in doc and len(parts) == 1 and isinstance(doc.get("summary"), dict):
        node = doc["summary"]  # a bare name that is not a top-level key: summary.NAME
    for part in parts:
        if not isinstance(node, dict) or part not in node or (node is doc and part in _NOT_FIGURES):
            raise CheckError(f"--check {key!r}: no such figure; available: {available(doc)}")
        node = node[part]
    if node is None:
        raise CheckError(f"--check {key!r}: this figure is undefined for this result (e.g. the spread of one row)")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise CheckError(f"--check {key!r}: is not a number; available: {available(doc)}")
    return float(node)


def evaluate(checks: list[Check], doc: dict) -> list[dict]:
    """Each check's outcome: ``expr``, ``key``, ``actual``, ``threshold``, ``passed``.

    With several candidates (see :func:`candidate_views`) every check is evaluated for each, and each
    outcome also names its ``candidate``.
    """
    outcomes = []
    views = candidate_views(doc)
    for check in checks:
        for name, view in views:
            actual = _resolve(view, check.key)
            outcome = {
                "expr": check.expr,
                "key": check.key,
                "op": check.op,
                "actual": actual,
                "threshold": check.threshold,
                "passed": bool(OPERATORS[check.op](actual, check.threshold)),
            }
            if name is not None:
                outcome["candidate"] = name
            outcomes.append(outcome)
    return outcomes


def describe_failure(outcome: dict) -> str:
    """One line for a failed check: which, and by how much."""
    actual, threshold = outcome["actual"], outcome["threshold"]
    gap = float(actual) - float(threshold)
    if outcome["op"] in ("==", "!=") or not math.isfinite(gap):  # (inf − inf has no size to say)
        by = f"actual {actual!r}, threshold {threshold!r}"
    elif gap == 0:
        by = f"actual {actual!r} is at the threshold"
    else:
        side = "above" if gap > 0 else "below"
        by = f"actual {actual!r} is {abs(gap):.6g} {side} the threshold {threshold!r}"
    candidate = f" for {shown(outcome['candidate'])}" if "candidate" in outcome else ""
    return f"check failed: {outcome['expr']}{candidate} ({by})"
