"""Global rows named by their shard (SPEC §4): ``argmax_shard``/``argmax_row_in_shard`` and ``worst[].shard``.

Every command numbers rows globally, over all the rows read. When an operand
is sharded (a glob or a directory), the result also says where a named row
lies: beside each summary's ``argmax``, the shard's path (as the glob gave it)
and the row within that shard; in each ``worst`` entry, ``shard`` and
``row_in_shard`` beside ``row``. It is done here, once, for every command: the
shards are those of the first sharded operand in the command's order (P before
Q, BASE before TEST, then labels and mask) that holds the rows named.
"""

from __future__ import annotations

from collections.abc import Callable

from klcli.io.shards import locate, recording, total
from klcli.io.source import Source
from klcli.result import Result

# Operands whose every value is one position (token ids, a mask, per-token log-probabilities): a global position
# counts their values; a distribution operand's position is a row.
_PER_POSITION_ROLES = ("labels", "mask", "logprobs", "probs")


def named_by_shard(compute: Callable, operands: list) -> Callable:
    """``compute`` (progress → Result), whose result also names its rows by shard when an operand is sharded."""

    def named(progress):
        with recording() as opened:
            result = compute(progress)
        return name_rows(result, opened, operands) if opened else result

    return named


def _unit(source: Source, result: Result) -> str:
    if result.summary_over == "sequences":
        return "sequences"
    return "values" if source.role in _PER_POSITION_ROLES else "rows"


def _summaries(result: Result) -> list[dict]:
    return [result.summary, *(m for m in result.metrics.values() if isinstance(m, dict))]


def _worst(result: Result) -> list[dict]:
    worst = result.figures.get("worst")
    return [entry for entry in worst if isinstance(entry, dict)] if isinstance(worst, list) else []


def _choose(rows: list[int], result: Result, opened: list[Source], operands: list) -> tuple[Source, str] | None:
    """The sharded source whose shards name ``rows``: the first, in operand order, holding all of them."""
    if not rows:
        return None
    by_operand: dict[str, Source] = {}
    for source in opened:
        by_operand.setdefault(source.operand, source)
    for operand in operands:
        source = by_operand.get(operand) if isinstance(operand, str) else None
        if source is None:
            continue
        unit = _unit(source, result)
        if unit != "values" and len(source.shape) == 1:
            continue  # 1-D shards are one vector: a row or a sequence spans them all
        size = total(source, unit)
        if size is not None and max(rows) < size:
            return source, unit
    return None


def _groups(result: Result, operands: list) -> list[tuple[list[dict], list[dict], list]]:
    """(summaries, worst entries, operands in the order their shards name the rows) for each set of figures.

    One set for most results; compare adds one per candidate (``tests[i]``), named by BASE's shards, else by
    that candidate's own (TEST i), else the labels' or the mask's — never by another candidate's.
    """
    tests = result.figures.get("tests")
    if result.command != "compare" or not isinstance(tests, list) or not tests:
        return [(_summaries(result), _worst(result), operands)]
    count = len(tests)
    base, candidates, rest = operands[:1], operands[1:1 + count], operands[1 + count:]
    top = result.figures.get("worst")
    groups = [(_summaries(result), [e for e in top if isinstance(e, dict)] if isinstance(top, list) else [],
               [*base, *candidates[:1], *rest])]
    for index, test in enumerate(tests):
        if not isinstance(test, dict):
            continue
        summaries = [value for value in test.values() if isinstance(value, dict) and "argmax" in value]
        worst = [e for e in test.get("worst") or [] if isinstance(e, dict)]
        groups.append((summaries, worst, [*base, *candidates[index:index + 1], *rest]))
    return groups


def name_rows(result: Result, opened: list[Source], operands: list) -> Result:
    """``result`` with each named row's shard beside it (the result itself when no operand is sharded)."""
    for summaries, worst, order in _groups(result, operands):
        rows = [s["argmax"] for s in summaries if isinstance(s.get("argmax"), int)]
        rows += [entry["row"] for entry in worst if isinstance(entry.get("row"), int)]
        chosen = _choose(rows, result, opened, order)
        if chosen is None:
            continue
        source, unit = chosen

        def beside(entry: dict, key: str, shard_key: str, row_key: str) -> None:
            where = locate(source, entry[key], unit)  # noqa: B023 — called within this iteration only
            if where is not None:
                entry[shard_key], entry[row_key] = where

        for summary in summaries:
            if isinstance(summary.get("argmax"), int):
                beside(summary, "argmax", "argmax_shard", "argmax_row_in_shard")
        for entry in worst:
            if isinstance(entry.get("row"), int):
                beside(entry, "row", "shard", "row_in_shard")
    return result
