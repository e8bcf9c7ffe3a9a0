"""What every command shares: opening operands, streaming pairs, building results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from klcli import engine
from klcli.core import fast
from klcli.core.logspace import LogRows, as_log_rows, looks_like_probabilities
from klcli.core.stats import summarize
from klcli.engine import paired_blocks, threads_note
from klcli.errors import AS_ASKED, DistributionError, UsageError
from klcli.io.operand import open_operand
from klcli.io.source import Source, rows_per_block


@dataclass(frozen=True)
class Reading:
    """How to read the values of P and Q (SPEC §3: kinds, normalising, smoothing)."""

    p_kind: str = "probs"
    q_kind: str = "probs"
    temperature: float = 1.0
    normalize: bool = False
    epsilon: float = 0.0
    threads: int = 0  # 0: every core available to the process
    precision: str = "precise"  # or "fast": float32 arithmetic for float32 logits (kl)
    p_kind_given: bool = True  # False where the kind is the command's default (compare's logits)
    q_kind_given: bool = True
    kind_fix: str = "--kind probs"  # how the command's user says "these are probabilities"
    observed: list = field(default_factory=list, compare=False)  # notes made while reading

    def log_rows(self, block: np.ndarray, kind: str, source: Source, first_row: int) -> LogRows:
        options = {"kind": source.forced_kind or kind, **source.kernel_options}
        return as_log_rows(block, label=source.label, first_row=first_row, temperature=self.temperature,
                           normalize=self.normalize, epsilon=self.epsilon, fast=self.precision == "fast",
                           stored=source.dtype, **options)

    def effective_precision(self, sources: list[Source], kinds: list[str],
                            smoothing: float = 0.0) -> tuple[str, list[str]]:
        """The precision the figures were computed at, and a note where ``--precision fast`` could not apply."""
        return effective_precision(self.precision, sources, kinds, temperature=self.temperature,
                                   smoothing=smoothing, epsilon=self.epsilon)

    def notes(self) -> list[str]:
        notes = []
        if self.epsilon:
            notes.append(f"--epsilon {self.epsilon:g} was added to every probability of P and Q, "
                         "and the rows renormalised")
        if self.temperature != 1.0:
            notes.append(f"distributions tempered: softmax(log p / {self.temperature:g})")
        return notes + self.observed + threads_note(self.threads)

    def checked(self, source: Source, kind: str, given: bool) -> Source:
        """``source``, whose logits are checked not to be probabilities (see :func:`logits_checked`)."""
        if kind != "logits":
            return source
        return logits_checked(source, given=given, fix=self.kind_fix, notes=self.observed)


def logits_checked(source: Source, *, given: bool, fix: str, notes: list) -> Source:
    """A source read as logits whose first block is checked not to be probabilities (SPEC §3).

    If every row of the first block is a probability vector, reading it as logits gives wrong figures
    (softmax of numbers in [0, 1] is nearly uniform): an error naming ``fix`` when logits were only the
    default, a note when they were asked for. One block decides, so the check streams: a real model's
    logits row essentially never looks like a probability vector.
    """
    if source.forced_kind is not None:
        return source

    def blocks(rows: int):
        checked = False
        for block in source.read_blocks(rows):
            if not checked and block.shape[0]:
                checked = True
                if looks_like_probabilities(block, source.dtype):
                    what = (f"{source.label}: every row of its first block is a probability vector (entries in "
                            "[0, 1] summing to 1)")
                    if not given:
                        raise DistributionError(f"{what}, but it would be read as logits, which gives wrong "
                                                f"figures; {fix}")
                    notes.append(f"{what}; {AS_ASKED}")
            yield block

    return replace(source, read_blocks=blocks)


def effective_precision(precision: str, sources: list[Source], kinds: list[str], *, temperature: float = 1.0,
                        smoothing: float = 0.0, epsilon: float = 0.0) -> tuple[str, list[str]]:
    """``fast`` only where its float32 kernel applies to every input; otherwise ``precise``, with a note saying why."""
    if precision != "fast":
        return precision, []
    for source, kind in zip(sources, kinds):
        reason = fast.not_applicable(source.forced_kind or kind, source.dtype, temperature=temperature,
                                     smoothing=smoothing, epsilon=epsilon)
        if reason is not None:
            return "precise", [f"--precision fast does not apply to {reason} ({source.label}): computed at the "
                               "default precision (float64)"]
    return precision, []


def open_operands(*operands: tuple[str, str]) -> list[Source]:
    """Open ``(operand, role)`` pairs; standard input may be read by one operand only."""
    if sum(1 for operand, _ in operands if isinstance(operand, str) and operand == "-") > 1:
        raise UsageError("only one operand can read standard input ('-')")
    return [open_operand(operand, role) for operand, role in operands]


def open_pair(p: str, q: str, roles: tuple[str, str] = ("P", "Q"), tail: str = "bucket"):
    """Open two operands to be compared row by row, and any figures their format adds.

    Two OpenAI-style logprobs files are aligned into dense rows over their
    shared tokens (see :mod:`klcli.io.openai`); other operands open as they are.
    """
    from klcli.io.openai import aligned_pair, is_logprobs_json

    p_json, q_json = is_logprobs_json(p), is_logprobs_json(q)
    if p_json and q_json:
        p_source, q_source, mismatches = aligned_pair(p, q, p, q, tail)
        p_source.role, q_source.role = roles
        return p_source, q_source, {"sampled_token_mismatches": mismatches, "tail": tail}
    if p_json or q_json:
        raise UsageError("an OpenAI-style logprobs file (.json, .jsonl) is compared only with another one")
    p_source, q_source = open_operands((p, roles[0]), (q, roles[1]))
    return p_source, q_source, {}


@dataclass
class PairRun:
    """The per-row arrays of a kernel run over two sources, and the rows each held."""

    per_row: dict[str, np.ndarray]
    rows: int
    p_rows: int
    q_rows: int
    p_width: int | None = None  # outcomes per row as read (a text column's length)
    q_width: int | None = None


def run_pairs(
    p_source: Source,
    q_source: Source,
    reading: Reading,
    kernel: Callable[[LogRows, LogRows], dict[str, np.ndarray]],
    progress=None,
    first_row: int = 0,
) -> PairRun:
    """Stream both sources block by block through ``kernel`` (one value per row per metric) on the engine."""
    seen = {"P": _SideCount(), "Q": _SideCount()}
    p_source = reading.checked(p_source, reading.p_kind, reading.p_kind_given)
    q_source = reading.checked(q_source, reading.q_kind, reading.q_kind_given)
    block_rows: Callable[[int], int] = rows_per_block
    if p_source.reference is not None or q_source.reference is not None:  # a top-K reference (commands/reference)
        from klcli.commands.reference import check_reference_pair, pair_block_rows

        check_reference_pair(p_source, q_source, reading)
        block_rows = pair_block_rows(p_source, q_source)  # its packed rows are narrower than Q's vocabulary
    pairs = paired_blocks(p_source.blocks(rows_per_block(p_source.outcomes or 1)),
                          q_source.blocks(rows_per_block(q_source.outcomes or 1)),
                          block_rows=block_rows, p_label=p_source.label, q_label=q_source.label,
                          same_width=p_source.reference is None, first_row=first_row)

    def p_rows(block, start):
        return reading.log_rows(block, reading.p_kind, p_source, start)

    def q_rows(block, start):
        return reading.log_rows(block, reading.q_kind, q_source, start)

    def work(item) -> engine.Partial:
        start, p_side, q_side = item
        p_side = p_side if isinstance(p_side, LogRows) else p_rows(p_side, start)
        q_side = q_side if isinstance(q_side, LogRows) else q_rows(q_side, start)
        figures = {name: np.asarray(values) for name, values in kernel(p_side, q_side).items()}
        return engine.Partial(start, start + max(p_side.rows, q_side.rows), figures)

    # A single row broadcast against many is converted once, here, before the blocks go to the threads.
    items = ((start, seen["P"].pass_on(p_block, p_rows), seen["Q"].pass_on(q_block, q_rows))
             for start, p_block, q_block in pairs)
    merged = engine.run(items, work, threads=reading.threads, progress=progress)
    return PairRun(merged.per_row, merged.rows, seen["P"].rows, seen["Q"].rows, seen["P"].width, seen["Q"].width)


def run_rows(source: Source, reading: Reading, kernel: Callable[[LogRows], dict[str, np.ndarray]],
             progress=None) -> PairRun:
    """The one-operand form of :func:`run_pairs` (``entropy``): ``source``'s blocks through ``kernel`` on the engine."""
    source = reading.checked(source, reading.p_kind, reading.p_kind_given)
    width: list[int] = []

    def items():
        start = 0
        for block in source.blocks(rows_per_block(source.outcomes or 1)):
            width[:] = [block.shape[1]]
            yield start, block
            start += block.shape[0]

    def work(item) -> engine.Partial:
        start, block = item
        rows = reading.log_rows(block, reading.p_kind, source, start)
        figures = {name: np.asarray(values) for name, values in kernel(rows).items()}
        return engine.Partial(start, start + rows.rows, figures)

    merged = engine.run(items(), work, threads=reading.threads, progress=progress)
    return PairRun(merged.per_row, merged.rows, merged.rows, 0, width[0] if width else None)


class _SideCount:
    """Counts one side's rows; a block seen again (a single row broadcast) is converted once."""

    def __init__(self):
        self.rows = 0
        self.width = None
        self._last_block = None
        self._converted = None

    def pass_on(self, block, to_log_rows):
        if block is self._last_block:
            if self._converted is None:
                self._converted = to_log_rows(block, 0)
            return self._converted
        self._last_block, self._converted = block, None
        self.rows += block.shape[0]
        self.width = block.shape[1]
        return block


def describe_inputs(sources: list[Source], kinds: list[str], rows: list[int | None],
                    widths: list[int | None] | None = None) -> list[dict]:
    """The ``inputs`` entries; a 1-D source (one vector, e.g. a table column) is described by its length."""
    entries = []
    for source, kind, count, width in zip(sources, kinds, rows, widths or [None] * len(sources)):
        entry = source.describe(width if len(source.shape) == 1 and width is not None else count)
        entry["kind"] = source.forced_kind or kind
        entries.append(entry)
    return entries


def infinite_note(name: str, values: np.ndarray, why: str) -> list[str]:
    """A note naming the first row whose figure is infinite, if any."""
    infinite = np.flatnonzero(np.isinf(values))
    if not infinite.size:
        return []
    return [f"{name} is inf in {infinite.size} row(s), first row {int(infinite[0])}: {why}"]


def by_direction(direction: str, forward: Callable[[], np.ndarray],
                 reverse: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row figures ``--direction`` asks for: ``kl``, ``kl_reverse`` and their sum ``kl_symmetric``.

    Each side is computed only if it is asked for.
    """
    figures = {}
    if direction in ("forward", "both"):
        figures["kl"] = forward()
    if direction in ("reverse", "both"):
        figures["kl_reverse"] = reverse()
    if direction == "both":
        figures["kl_symmetric"] = figures["kl"] + figures["kl_reverse"]
    return figures


def headline_of(direction: str) -> tuple[str, str]:
    """The metric ``value`` reports for a ``--direction``, and how people read it."""
    return ("kl_reverse", "mean D(Q‖P)") if direction == "reverse" else ("kl", "mean D(P‖Q)")


def summaries(per_row: dict[str, np.ndarray]) -> dict[str, dict]:
    """The summary of each per-row metric, by name."""
    return {name: summarize(values) for name, values in per_row.items()}
