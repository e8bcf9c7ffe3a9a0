"""What every command shares: opening operands, streaming pairs, building results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from klcli.core.logspace import LogRows, as_log_rows
from klcli.core.stats import summarize
from klcli.core.stream import available_cores, ordered_map, paired_blocks, threads_note
from klcli.errors import UsageError
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

    def log_rows(self, block: np.ndarray, kind: str, source: Source, first_row: int) -> LogRows:
        return as_log_rows(block, source.forced_kind or kind, label=source.label, first_row=first_row,
                           temperature=self.temperature, normalize=self.normalize, epsilon=self.epsilon,
                           fast=self.precision == "fast")

    def notes(self) -> list[str]:
        notes = []
        if self.epsilon:
            notes.append(f"--epsilon {self.epsilon:g} was added to every probability of P and Q, "
                         "and the rows renormalised")
        if self.temperature != 1.0:
            notes.append(f"distributions tempered: softmax(log p / {self.temperature:g})")
        return notes + threads_note(self.threads)


def open_operands(*operands: tuple[str, str]) -> list[Source]:
    """Open ``(operand, role)`` pairs; standard input may be read by one operand only."""
    if sum(1 for operand, _ in operands if operand == "-") > 1:
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


def run_pairs(
    p_source: Source,
    q_source: Source,
    reading: Reading,
    kernel: Callable[[LogRows, LogRows], dict[str, np.ndarray]],
    progress=None,
) -> PairRun:
    """Stream both sources block by block through ``kernel`` (one value per row per metric)."""
    seen = {"P": _SideCount(), "Q": _SideCount()}
    pairs = paired_blocks(p_source.blocks(rows_per_block(p_source.outcomes or 1)),
                          q_source.blocks(rows_per_block(q_source.outcomes or 1)),
                          block_rows=rows_per_block, p_label=p_source.label, q_label=q_source.label)

    def p_rows(block, start):
        return reading.log_rows(block, reading.p_kind, p_source, start)

    def q_rows(block, start):
        return reading.log_rows(block, reading.q_kind, q_source, start)

    def work(item):
        start, p_side, q_side = item
        p_side = p_side if isinstance(p_side, LogRows) else p_rows(p_side, start)
        q_side = q_side if isinstance(q_side, LogRows) else q_rows(q_side, start)
        return max(p_side.rows, q_side.rows), kernel(p_side, q_side)

    # A single row broadcast against many is converted once, here, before the blocks go to the threads.
    items = ((start, seen["P"].pass_on(p_block, start, p_rows), seen["Q"].pass_on(q_block, start, q_rows))
             for start, p_block, q_block in pairs)
    pieces: dict[str, list[np.ndarray]] = {}
    done = 0
    for rows, figures in ordered_map(work, items, reading.threads or available_cores()):
        for name, values in figures.items():
            pieces.setdefault(name, []).append(np.asarray(values))
        done += rows
        if progress is not None:
            progress.update(done)
    per_row = {name: np.concatenate(parts) for name, parts in pieces.items()}
    return PairRun(per_row, done, seen["P"].rows, seen["Q"].rows)


class _SideCount:
    """Counts one side's rows; a block seen again (a single row broadcast) is converted once."""

    def __init__(self):
        self.rows = 0
        self._last_block = None
        self._converted = None

    def pass_on(self, block, start, to_log_rows):
        if block is self._last_block:
            if self._converted is None:
                self._converted = to_log_rows(block, 0)
            return self._converted
        self._last_block, self._converted = block, None
        self.rows += block.shape[0]
        return block


def describe_inputs(sources: list[Source], kinds: list[str], rows: list[int | None]) -> list[dict]:
    entries = []
    for source, kind, count in zip(sources, kinds, rows):
        entry = source.describe(count)
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
