"""``--check KEY OP NUMBER``: assertions on a result, for CI gates (SPEC §5)."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from klcli.errors import CheckError

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
    """Each check's outcome: ``expr``, ``key``, ``actual``, ``threshold``, ``passed``."""
    outcomes = []
    for check in checks:
        actual = _resolve(doc, check.key)
        outcomes.append({
            "expr": check.expr,
            "key": check.key,
            "op": check.op,
            "actual": actual,
            "threshold": check.threshold,
            "passed": bool(OPERATORS[check.op](actual, check.threshold)),
        })
    return outcomes


def describe_failure(outcome: dict) -> str:
    """One line for a failed check: which, and by how much."""
    actual, threshold = outcome["actual"], outcome["threshold"]
    gap = actual - threshold
    if outcome["op"] in ("==", "!="):
        by = f"actual {actual!r}"
    else:
        side = "above" if gap > 0 else "below" if gap < 0 else "at"
        by = f"actual {actual!r} is {abs(gap):.6g} {side} the threshold {threshold!r}"
    return f"check failed: {outcome['expr']} ({by})"
