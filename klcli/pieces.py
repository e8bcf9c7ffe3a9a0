"""One run cut into pieces of rows: map each piece to its partial, merge the partials, finish once.

A streaming command is a :class:`Split` (see :mod:`klcli.runner`): ``layout``
says how many rows its driving operand has and where pieces may be cut (at
sequence boundaries for (B, T, V) logits); ``map`` reads rows [a, b) of every
operand and returns that piece's :class:`Piece` (the engine's exact
:class:`~klcli.engine.Partial` and what the report needs to name the inputs);
``finish`` turns the merged piece into the Result. One process maps the whole
input as one piece; ``--jobs`` maps pieces in worker processes, ``--partial``
writes one piece to a file for ``klcli merge``, and ``--engine dask`` maps them
on a Dask cluster. All of them merge with :func:`merge_pieces` and call the
same ``finish``, so every route prints the same report.

This module knows pieces and processes, not formats, kinds or units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from klcli import engine
from klcli.engine import Partial
from klcli.errors import InputError, KlcliError, UsageError

Rows = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """The rows a command's pieces divide: ``total`` rows, cut only at multiples of ``align``.

    ``total`` None: the input cannot be cut (its length is known only once read,
    or it is standard input); ``why`` says so for the note. ``cuts``: where a
    sharded operand's shards end (the one whose shards name the rows), so that
    pieces are whole shards — N pieces of N shards are the shards, computed
    where each lies (see :func:`klcli.io.ranges.piece_ranges`).
    """

    total: int | None
    align: int = 1
    why: str = ""
    cuts: tuple[int, ...] = ()


@dataclass
class Piece:
    """The partial of rows ``partial.start`` to ``partial.stop`` and the facts its report needs (JSON values).

    ``meta`` holds the input descriptions, the precision the figures were
    computed at and the notes made while reading; ``meta["notes"]`` of pieces
    are joined, every other entry is the first piece's.
    """

    partial: Partial
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """A streaming command as map and finish (see the module's docstring)."""

    layout: Callable[[], Layout]
    map: Callable[[Rows | None, Any], Piece]  # (rows, or None for all; progress) → Piece
    finish: Callable[[Piece], Any]  # merged Piece → Result


def reads_stdin(*operands) -> bool:
    """Whether any operand is standard input ('-'), which is read once and so never cut into pieces."""
    return any(isinstance(operand, str) and operand == "-" for operand in operands)


def merge_pieces(pieces: Iterable[Piece]) -> Piece:
    """One piece for pieces of consecutive rows given in any order (see :func:`klcli.engine.merge`).

    Raises ``ValueError`` naming the rows where pieces overlap or leave a gap.
    """
    ordered = sorted(pieces, key=lambda piece: piece.partial.start)
    if not ordered:
        raise ValueError("no pieces to merge")
    merged = engine.merge(piece.partial for piece in ordered)
    meta = dict(ordered[0].meta)
    meta["notes"] = list(dict.fromkeys(note for piece in ordered for note in piece.meta.get("notes", [])))
    return Piece(merged, meta)


def tree_merge(pieces: list[Piece]) -> Piece:
    """:func:`merge_pieces` pairwise in a tree, as Dask's reductions combine chunks (merge is exact: same result)."""
    level = sorted(pieces, key=lambda piece: piece.partial.start)
    while len(level) > 1:
        level = [merge_pieces(level[i : i + 2]) for i in range(0, len(level), 2)]
    return level[0]


# --- a piece, anywhere -------------------------------------------------------------------------------------------


def map_piece(command: str, operands: list, options: dict, rows: Rows | None) -> Piece:
    """Plan ``command`` (options checked again where it runs) and map ``rows`` of its operands."""
    from klcli.runner import plan

    split = plan(command, *operands, **options).split
    if split is None:
        raise UsageError(f"{command} does not run in pieces")
    return split.map(rows, None)


def _piece_or_error(command: str, operands: list, options: dict, rows: Rows) -> tuple:
    """What a worker sends back: ("piece", Piece), or ("error", class name, message) for klcli's own errors."""
    from klcli.boundary import tune_process

    tune_process()  # a worker process is tuned as klcli's own process is (its heap; BLAS where not yet loaded)
    try:
        return "piece", map_piece(command, operands, options, rows)
    except KlcliError as exc:
        return "error", type(exc).__name__, exc.cli_message()


def _raise_from(outcome: tuple, rows: Rows) -> Piece:
    if outcome[0] == "piece":
        return outcome[1]
    from klcli import errors

    kind = getattr(errors, outcome[1], InputError)
    raise kind(f"{outcome[2]} (in the piece of rows {rows[0]}–{rows[1]})")


def dask_piece(command: str, operands: list, options: dict, rows: Rows) -> bytes:
    """A Dask task: the piece's partial in the partial-file format (bytes: no klcli class crosses the wire)."""
    from klcli.io.partial_file import encode

    outcome = _piece_or_error(command, operands, options, rows)
    if outcome[0] == "error":
        raise RuntimeError(f"klcli-error:{outcome[1]}:{outcome[2]}")
    return encode(command, operands, options, outcome[1])


# --- routes ------------------------------------------------------------------------------------------------------


def pieces_of(split: Split, count: int) -> tuple[list[Rows], list[str]]:
    """The row ranges of ``count`` pieces (one, with a note, where the input cannot be cut)."""
    layout = split.layout()
    if layout.total is None:
        return [], [f"ran in one process: {layout.why}"] if layout.why else []
    return _ranges(layout, count), []


def _ranges(layout: Layout, count: int) -> list[Rows]:
    from klcli.io.ranges import piece_ranges

    return piece_ranges(layout.total or 0, count, layout.align, layout.cuts)


def one_piece(split: Split, piece: str) -> Rows | None:
    """``--piece K/N``: the K-th (1-based) of N row ranges, as every job of a CI matrix computes it alike (None:
    every row, the one piece of an input that cannot be cut)."""
    try:
        number, count = (int(part) for part in piece.split("/"))
    except ValueError:
        raise UsageError(f"--piece {piece!r}: give K/N, e.g. 3/8 for the third of eight pieces") from None
    if not 1 <= number <= count:
        raise UsageError(f"--piece {piece}: K must be between 1 and N")
    layout = split.layout()
    if layout.total is None:
        if count == 1:
            return None  # the one piece is every row
        raise UsageError(f"--piece {piece}: the input cannot be cut into pieces ({layout.why})")
    ranges = _ranges(layout, count)
    if len(ranges) < count:
        unit = "sequences" if layout.align > 1 else "rows"
        raise UsageError(f"--piece {piece}: the input has only {len(ranges)} {unit}; use at most {len(ranges)} "
                         "pieces")
    return ranges[number - 1]


def worker_threads(options: dict, workers: int) -> dict:
    """Each worker's share of the cores (``--threads 0``: every core, divided among the workers)."""
    if "threads" in options and not options["threads"]:
        return {**options, "threads": max(1, engine.available_cores() // max(1, workers))}
    return options


def run_jobs(command: str, operands: list, options: dict, split: Split, jobs: int) -> Piece:
    """The merged piece, its pieces mapped in ``jobs`` worker processes (forkserver, else spawn: never a fork
    of a process that has threads)."""
    ranges, notes = pieces_of(split, jobs)
    if len(ranges) <= 1:
        piece = split.map(None, None)
        piece.meta.setdefault("notes", []).extend(notes)
        return piece
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    worker_options = worker_threads(options, len(ranges))
    from klcli.boundary import tune_process

    # The initializer runs before the worker imports NumPy, so BLAS is held to one thread there too.
    pool = ProcessPoolExecutor(max_workers=len(ranges), mp_context=context, initializer=tune_process)
    done = False
    try:
        futures = [pool.submit(_piece_or_error, command, operands, worker_options, rows) for rows in ranges]
        pieces = []
        for future, rows in zip(futures, ranges):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                raise InputError(f"the worker process of rows {rows[0]}–{rows[1]} died (out of memory, or killed); "
                                 "try fewer --jobs") from None
            pieces.append(_raise_from(outcome, rows))
        done = True
        return merge_pieces(pieces)
    finally:
        if not done:  # an error or Ctrl-C: stop the other workers now rather than waiting for them
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


DASK_MISSING = "--engine dask needs Dask: pip install 'klcli[dask]'"


def run_dask(command: str, operands: list, options: dict, split: Split, scheduler: str | None) -> Piece:
    """The merged piece, each piece a Dask task; ``scheduler`` ``local:N`` starts (and stops) N worker processes.

    The workers open the operands by their paths: they must see the same files (a shared filesystem).
    """
    if not scheduler:
        raise UsageError("--engine dask needs --scheduler ADDRESS (a dask.distributed scheduler, e.g. "
                         "tcp://10.0.0.5:8786) or --scheduler local:N (N local worker processes)")
    if any(not isinstance(operand, str) for operand in operands if operand is not None) or reads_stdin(*operands):
        raise UsageError("--engine dask reads files by their paths; arrays and standard input stay in this process")
    try:
        import dask  # noqa: F401
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(DASK_MISSING) from None
    cluster = None
    if scheduler.startswith("local:"):
        try:
            workers = int(scheduler[len("local:"):])
        except ValueError:
            workers = 0
        if workers < 1:
            raise UsageError(f"--scheduler {scheduler}: give local:N with N >= 1 worker processes")
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its start-up chatter is not klcli's output
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # inherited by the local workers, before their NumPy
    try:
        if scheduler.startswith("local:"):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL)  # a task's error is reported once, by klcli
            client = Client(cluster, timeout="60s")
        else:
            client = Client(scheduler, timeout="30s")
    except Exception as exc:  # noqa: BLE001 — Dask reports a scheduler it cannot reach or start in many ways
        if cluster is not None:
            cluster.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "cannot start the local Dask cluster" if scheduler.startswith("local:") else \
            "cannot reach the Dask scheduler"
        raise UsageError(f"--scheduler {scheduler}: {what} ({first})") from None
    try:
        count = len(client.scheduler_info().get("workers", {})) or 1
        ranges, notes = pieces_of(split, count)  # rows cost alike: one piece per worker, the fewest start-ups
        if not ranges:
            piece = split.map(None, None)
            piece.meta.setdefault("notes", []).extend(notes)
            return piece
        worker_options = {**options, "threads": options.get("threads") or 1} if "threads" in options else options
        futures = client.map(dask_piece, [command] * len(ranges), [operands] * len(ranges),
                             [worker_options] * len(ranges), ranges, pure=False, retries=0)
        from klcli.io.partial_file import decode

        pieces = []
        for future, rows in zip(futures, ranges):
            try:
                data = future.result()
            except Exception as exc:  # noqa: BLE001 — a task's error, re-raised by Dask on the client
                raise _dask_error(exc, rows) from None
            pieces.append(decode(data, f"the Dask task of rows {rows[0]}–{rows[1]}")[1])
        return tree_merge(pieces)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _dask_error(exc: BaseException, rows: Rows) -> KlcliError:
    from klcli import errors

    text = str(exc)
    where = f"(in the Dask task of rows {rows[0]}–{rows[1]})"
    if "klcli-error:" in text:
        _, name, message = text[text.index("klcli-error:"):].split(":", 2)
        kind = getattr(errors, name, InputError)
        return kind(f"{message.rstrip(chr(39)).rstrip()} {where}")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return InputError(f"a Dask worker failed {where}: {type(exc).__name__}: {first}")
