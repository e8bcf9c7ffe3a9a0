"""``klcli merge PART…``: partial files of one run, checked against each other, merged and finished.

Each partial records its command, the options that shape its figures, its
inputs and its rows; they merge only if all of those agree and the rows tile
``0 … total`` without a gap or an overlap. The report is then the command's own
``finish`` of the merged piece, so it is what one run over every row prints;
the unit (``--base``) and the output options are chosen at merge time.
"""

from __future__ import annotations

import re

from klcli.errors import InputError, UsageError
from klcli.result import Result

# Options that change how a piece is computed, not its figures.
_NOT_FIGURES = {"threads"}
_DESCRIBED = ("role", "operand", "path", "format", "shape", "dtype", "kind")


def _natural(text: str) -> list:
    """Sort key: ``part-2`` before ``part-10``."""
    return [int(chunk) if chunk.isdigit() else chunk for chunk in re.split(r"(\d+)", text)]


def expand(patterns: list[str]) -> list[str]:
    """Each pattern's files (a glob in natural order, or the path itself); a glob that matches nothing is an error."""
    import glob
    import os

    paths: list[str] = []
    for pattern in patterns:
        if os.path.exists(pattern) or not glob.has_magic(pattern):
            paths.append(pattern)
            continue
        matches = sorted(glob.glob(pattern), key=_natural)
        if not matches:
            raise InputError(f"{pattern}: matches no file")
        paths.extend(matches)
    return list(dict.fromkeys(paths))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_same_run(headers: list[tuple[str, dict]]) -> None:
    first_path, first = headers[0]
    for path, header in headers[1:]:
        if header["command"] != first["command"]:
            raise UsageError(f"{path} is a partial of klcli {header['command']} but {first_path} is of klcli "
                             f"{first['command']}; only partials of one command merge")
        options, theirs = first["options"], header["options"]
        for name in dict.fromkeys([*options, *theirs]):
            if name in _NOT_FIGURES:
                continue
            if options.get(name) != theirs.get(name):
                raise UsageError(f"{path} was computed with {_option(name)} {theirs.get(name)!r} but {first_path} "
                                 f"with {options.get(name)!r}; only partials of one run's options merge")
        mine = [{key: entry.get(key) for key in _DESCRIBED} for entry in first["inputs"]]
        other = [{key: entry.get(key) for key in _DESCRIBED} for entry in header["inputs"]]
        if mine != other:
            at = next((i for i, (a, b) in enumerate(zip(mine, other)) if a != b), 0)
            what = other[at] if at < len(other) else {}
            raise UsageError(f"{path} read other inputs than {first_path} ({what.get('role') or 'input'} "
                             f"{what.get('path') or what.get('operand')!r}, shape {what.get('shape')}); only "
                             "pieces of the same inputs merge")
        if header["total"] != first["total"]:
            raise UsageError(f"{path} is a piece of {header['total']} rows but {first_path} of {first['total']}; "
                             "only pieces of one run merge")


def _check_tiling(headers: list[tuple[str, dict]]) -> None:
    ordered = sorted(headers, key=lambda entry: entry[1]["rows"][0])
    total = ordered[0][1]["total"]
    at, before = 0, None
    for path, header in ordered:
        start, stop = header["rows"]
        if start > at:
            where = f"between {before} and {path}" if before else f"before {path}"
            raise UsageError(f"rows {at}–{start} are in no partial (a gap {where}); give every piece's partial")
        if start < at:
            raise UsageError(f"{path} (rows {start}–{stop}) overlaps {before} (rows up to {at}); give each piece "
                             "once")
        at, before = stop, path
    if at != total:
        raise UsageError(f"rows {at}–{total} are in no partial (after {before}); give every piece's partial")


def merge_partials(patterns: list[str]) -> Result:
    """The Result one run over every row of the partials' inputs gives (nats)."""
    from klcli.io.partial_file import read_partial
    from klcli.pieces import merge_pieces
    from klcli.runner import plan

    paths = expand(patterns)
    read = [(path, *read_partial(path)) for path in paths]
    headers = [(path, header) for path, header, _ in read]
    _check_same_run(headers)
    _check_tiling(headers)
    first = headers[0][1]
    planned = plan(first["command"], *first["operands"], **first["options"])
    if planned.split is None:
        raise UsageError(f"{headers[0][0]}: klcli {first['command']} does not merge")
    result = planned.split.finish(merge_pieces(piece for _, _, piece in read))
    return _named_by_shard(result, planned, first)


def _named_by_shard(result: Result, planned, header: dict) -> Result:
    """Rows named by their shard, as one run names them, when the partials' inputs were sharded and their shards
    can be listed here (their headers are read, no row); where they cannot (merged on another machine), unnamed."""
    if not any(isinstance(described, dict) and described.get("shards") for described in header.get("inputs", [])):
        return result
    from klcli.errors import KlcliError
    from klcli.io.shards import recording
    from klcli.rownames import name_rows

    try:
        with recording() as opened:
            planned.split.layout()
    except KlcliError:
        return result
    return name_rows(result, opened, planned.operands) if opened else result
