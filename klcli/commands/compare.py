"""``compare``: a drift report between a base model's outputs and one or more candidates' at the same positions.

Two steps over the engine, kept apart so a run can be split, written as
partials and merged elsewhere: :func:`map_block` turns one block of aligned
rows (the base's, each candidate's, and the labels or mask) into an
:class:`engine.Partial` of per-position values — the base's under their own
names, each candidate's under ``test<i>.<name>`` (:func:`candidate_key`) — and
:func:`finish` turns the merged partial into the :class:`Result`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from klcli import engine
from klcli.commands.common import Reading, describe_inputs, open_operands
from klcli.commands.perplexity import _sequence_length
from klcli.core import drift
from klcli.core.compare import (
    BaseSide,
    agreement_stderr,
    confidence_buckets,
    fast_position_stats,
    label_rank,
    label_stats,
    nll_correlation,
    paired_difference,
    perplexity_figures,
    position_stats,
    rms_figures,
)
from klcli.core.compare import (
    top_k as top_k_of,
)
from klcli.core.perplexity import INF_PERPLEXITY as _INF_PERPLEXITY
from klcli.core.perplexity import as_token_ids, perplexity_of, shifted_labels
from klcli.core.positions import as_position_mask, kept_log_rows, kept_rows, masked_labels
from klcli.core.stats import summarize
from klcli.engine import Rows, aligned_blocks
from klcli.errors import InputError, ShapeError, UsageError
from klcli.io.ranges import driving_cuts, position_count, position_range, row_count, row_range
from klcli.io.source import Source, rows_per_block
from klcli.pieces import Layout, Piece, reads_stdin
from klcli.result import Result

# The information quantities among the per-position figures (nats, reported in the chosen unit at delivery).
_INFORMATION = {"kl": 1.0, "kl_reverse": 1.0, "js": 1.0, "nll_base": 1.0, "nll_test": 1.0, "worst.kl": 1.0,
                "by_confidence.kl_mean": 1.0, "tests.kl": 1.0, "tests.kl_reverse": 1.0, "tests.js": 1.0,
                "tests.worst.kl": 1.0, "tests.by_confidence.kl_mean": 1.0,
                **{f"{where}{key}": 1.0 for where in ("", "tests.")
                   for key in ("kl_histogram.edges", "kl_by_position")}}
# Figures where more is better: --sort ranks them in descending order (every other figure ascending).
AGREEMENTS = ("top1_agreement", "topk_overlap", "label_in_topk", "nll_correlation")


def _check_shapes(base: Source, test: Source, vocab_size: int | None) -> None:
    """Same positions, and the same vocabulary (or, with --vocab-size N, at least N outcomes each)."""
    for source in (base, test):
        if vocab_size is not None and source.outcomes is not None and source.outcomes < vocab_size:
            raise UsageError(f"--vocab-size {vocab_size}: {source.label} has only {source.outcomes} outcomes per row")
    if None in base.shape or None in test.shape:
        return
    positions = math.prod(base.shape[:-1]) == math.prod(test.shape[:-1])
    if positions and (vocab_size is not None or base.shape[-1] == test.shape[-1]):
        return
    hint = ""
    if positions and base.reference is None:  # (a reference is over its model's full vocabulary: nothing to trim)
        narrower = min(base.shape[-1], test.shape[-1])
        hint = (f" (for logits padded past the tokenizer's vocabulary, compare the first {narrower} outcomes with "
                f"--vocab-size {narrower})")
    raise ShapeError(f"{base.label} has shape {base.shape_text} but {test.label} has shape {test.shape_text}; "
                     f"compare needs the same positions and vocabulary{hint}")


def _check_positions(base: Source, counter: Source | None) -> None:
    """Labels (or a mask) of known size hold one value per position of the logits: else both counts, up front."""
    if counter is None or None in base.shape or None in counter.shape or len(base.shape) < 2:
        return
    positions, values = math.prod(base.shape[:-1]), math.prod(counter.shape)
    if positions != values:
        what, verb = ("mask values", "holds") if counter.role == "mask" else ("labels", "hold")
        raise ShapeError(f"{counter.label} {verb} {values} {what} but {base.label} has {positions} positions; give "
                         f"one {what[:-1]} per position")


def _trimmed(blocks, vocab_size: int | None, source: Source):
    """The first ``vocab_size`` outcomes of each row (all of them without --vocab-size)."""
    for block in blocks:
        if vocab_size is not None:
            if block.shape[1] < vocab_size:
                raise UsageError(f"--vocab-size {vocab_size}: {source.label} has only {block.shape[1]} outcomes "
                                 "per row")
            block = block[:, :vocab_size]
        yield block


def candidate_key(index: int, name: str) -> str:
    """The partial's name for candidate ``index``'s per-position ``name`` (the base's keep their own)."""
    return f"test{index}.{name}"


def candidate_names(names, operands: list) -> list[str]:
    """``--name`` labels, or each TEST operand's file name (``FILE:SELECTOR`` with its selector), lengthened by its
    folders where two would be alike; an array from Python is ``TEST i``."""
    if names:  # (their count and distinctness are checked with the other options, in runner.plan_compare)
        return list(names)
    from pathlib import PurePath

    parts = [PurePath(operand).parts or (operand,) if isinstance(operand, str) else (f"TEST {i + 1}",)
             for i, operand in enumerate(operands)]
    depth = [1] * len(parts)
    while True:
        chosen = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, name in enumerate(chosen)
                 if depth[i] < len(parts[i]) and any(other == name and parts[j] != parts[i]
                                                    for j, other in enumerate(chosen))]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    seen: dict[str, int] = {}
    for i, name in enumerate(chosen):  # the same file given twice
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            chosen[i] = f"{name} #{seen[name]}"
    return chosen


def _position_blocks(source: Source, as_values):
    """``source`` read one value per position, each block converted by ``as_values`` (which names bad ones)."""
    position = 0
    for block in source.blocks(rows_per_block(1)):
        values = as_values(block, label=source.label, first_position=position)
        position += values.size
        yield values


def _id_blocks(labels: Source):
    return _position_blocks(labels, as_token_ids)


def _mask_blocks(mask: Source):
    return _position_blocks(mask, as_position_mask)


def _masked(ids_blocks, mask: Source, labels: Source, ignore_index: int):
    """The labels with every position ``--mask`` marks 0 set to the ignore index (labels AND mask)."""
    marks = Rows(block.reshape(-1, 1) for block in _mask_blocks(mask))
    for ids in ids_blocks:
        keep = marks.take(ids.size)
        if keep is None or keep.shape[0] != ids.size:
            raise ShapeError(f"{mask.label} holds {marks.drain()} values but {labels.label} hold more; give one "
                             "mask value per position")
        yield masked_labels(ids, keep[:, 0], ignore_index)
    if (total := marks.drain()) != marks.taken:
        raise ShapeError(f"{mask.label} holds {total} values but {labels.label} hold {marks.taken}; give one mask "
                         "value per position")


def _position_stream(labels: Source | None, mask: Source | None, shift: bool, length: int | None,
                     ignore_index: int):
    """Per position, its label (ignore index where left out), or without labels the mask as 0/1."""
    if labels is None:
        return (keep.astype(np.int64).reshape(-1, 1) for keep in _mask_blocks(mask))
    stream = _id_blocks(labels)
    if mask is not None:
        stream = _masked(stream, mask, labels, ignore_index)
    if shift:
        stream = shifted_labels(stream, length, ignore_index)
    return (ids.reshape(-1, 1) for ids in stream)


def _open(base_operand, test_operands: list, tail: str):
    """BASE and every TEST, opened; OpenAI-style logprobs files pair only one to one."""
    from klcli.commands.common import open_pair
    from klcli.io.openai import is_logprobs_json

    if len(test_operands) == 1:
        base, test, extras = open_pair(base_operand, test_operands[0], ("BASE", "TEST"), tail)
        return base, [test], extras
    if any(is_logprobs_json(operand) for operand in (base_operand, *test_operands)):
        raise UsageError("an OpenAI-style logprobs file (.json, .jsonl) is compared with one other such file at a "
                         "time; give one TEST")
    roles = [f"TEST {i + 1}" for i in range(len(test_operands))]
    sources = open_operands((base_operand, "BASE"), *zip(test_operands, roles))
    return sources[0], sources[1:], {}


@dataclass(frozen=True)
class Comparison:
    """What the map and finish steps need to know of a run, beside the blocks themselves."""

    reading: Reading
    base: Source
    tests: tuple[Source, ...]
    names: tuple[str, ...]
    top_k: int
    worst: int
    ignore_index: int
    with_labels: bool
    vocab: int | None
    sequence_length: int | None
    sort: str = "kl.mean"
    limit: int | None = None  # a top-K reference BASE: the K its top lists hold at most

    @property
    def candidates(self) -> int:
        return len(self.names)

    @property
    def top_size(self) -> int:
        """The longest top list any figure reads: the overlap's k, and with labels k = 1, 5 and --top-k."""
        size = max(self.top_k, 5) if self.with_labels else self.top_k
        return size if self.limit is None else min(size, self.limit)

    @property
    def ks(self) -> tuple[int, ...]:
        """The k of label_in_topk: 1, 5 and --top-k (those a top-K reference's K allows)."""
        return tuple(k for k in dict.fromkeys((1, 5, self.top_k)) if self.limit is None or k <= self.limit)


def _compare_sources(base_operand, test_operands: list, labels, mask, shift: bool, tail: str,
                     vocab_size: int | None, reading: Reading | None = None, top_k: int = 5):
    """BASE, every TEST, the labels and the mask, opened and checked against each other; the figures of the
    opening (the tail bucket), the top-k a top-K reference BASE allows, and the notes it earns."""
    base, tests, extras = _open(base_operand, test_operands, tail)
    label_source = open_operands((labels, "labels"))[0] if labels is not None else None
    mask_source = open_operands((mask, "mask"))[0] if mask is not None else None
    for test in tests:
        _check_shapes(base, test, vocab_size)
    reference_notes: list[str] = []
    if any(source is not None and source.reference is not None
           for source in (base, *tests, label_source, mask_source)):
        from klcli.commands.reference import check_reference_pair, compare_top_k, refuse_reference

        refuse_reference(label_source, "--labels")
        refuse_reference(mask_source, "--mask")
        if reading is not None:
            for test in tests:
                check_reference_pair(base, test, reading)
        if base.reference is not None:
            if vocab_size is not None:
                raise UsageError(f"--vocab-size: {base.label} is a top-K reference, written over its full "
                                 "vocabulary; compare it without --vocab-size")
            top_k, reference_notes = compare_top_k(base, top_k, shift=shift and labels is None)
    if labels is None and base.labels is not None:  # a llama.cpp base file carries its tokens
        label_source = Source(base.operand, base.path, base.format, base.shape[:-1], "int32", base.labels,
                              role="labels")
    for counted in (label_source, mask_source):
        _check_positions(base, counted)
    if shift and label_source is None:
        raise UsageError("--shift scores position t against label t+1; it needs --labels IDS")
    if shift and None not in base.shape and len(label_source.shape) > 1 and None not in label_source.shape \
            and tuple(label_source.shape) != tuple(base.shape[:-1]):
        # --shift ends each sequence where the logits' shape says: labels cut into other sequences (not flat)
        # would be shifted across their ends.
        raise ShapeError(f"{label_source.label} has shape {label_source.shape_text} but --shift needs the logits' "
                         f"leading shape {tuple(base.shape[:-1])} ({base.label} is {base.shape_text}): give both as "
                         "(B, T) labels and (B, T, V) logits")
    return base, tests, label_source, mask_source, extras, top_k, reference_notes


def compare_layout(base_operand, test_operands, *, labels=None, mask=None, shift: bool = False,
                   tail: str = "bucket", vocab_size: int | None = None) -> Layout:
    """The positions compare's pieces divide, cut at sequence boundaries ((B, T, V) logits)."""
    from klcli.io.openai import is_logprobs_json

    test_operands = list(test_operands)
    if any(is_logprobs_json(operand) for operand in (base_operand, *test_operands)):
        return Layout(None, why="logprobs files are aligned as a whole")
    if reads_stdin(base_operand, *test_operands, labels, mask):
        return Layout(None, why="standard input is read once")
    base, tests, label_source, mask_source, *_ = _compare_sources(base_operand, test_operands, labels, mask, shift,
                                                                  tail, vocab_size)
    total = row_count(base)
    counts = [position_count(source) for source in (label_source, mask_source) if source is not None]
    if total is None or None in [row_count(test) for test in tests] or None in counts:
        return Layout(None, why="a text table's length is known only once it is read")
    length = _sequence_length(base.shape)
    if shift and not length:
        return Layout(None, why="--shift over one sequence (N, V) reads it whole")
    sources = [(base, "rows"), *((test, "rows") for test in tests), (label_source, "values"), (mask_source, "values")]
    return Layout(total, length or 1, cuts=driving_cuts(total, *sources))


def compare_map(base_operand, test_operands, reading: Reading, rows=None, *, names=None, labels=None, mask=None,
                shift: bool = False, top_k: int = 5, ignore_index: int = -100, vocab_size: int | None = None,
                progress=None, tail: str = "bucket") -> Piece:
    """Positions [a, b) (every one if ``rows`` is None) of BASE, every TEST, the labels and the mask: the piece.

    BASE is read and normalised once per block, and every TEST scored against it in the same pass. Left-out
    positions are not read as distributions (padding may hold anything).
    """
    test_operands = list(test_operands)
    base, tests, label_source, mask_source, extras, top_k, reference_notes = _compare_sources(
        base_operand, test_operands, labels, mask, shift, tail, vocab_size, reading, top_k)
    names = candidate_names(names, test_operands)
    whole = [base, *tests] + [s for s in (label_source, mask_source) if s is not None]
    start = 0
    if rows is not None:
        start, stop = rows
        base, tests = row_range(base, start, stop), [row_range(test, start, stop) for test in tests]
        label_source, mask_source = (None if source is None else position_range(source, start, stop)
                                     for source in (label_source, mask_source))
    reading = replace(reading, observed=[])
    base = reading.checked(base, reading.p_kind, reading.p_kind_given)
    tests = [reading.checked(test, reading.q_kind, reading.q_kind_given) for test in tests]
    counter = label_source or mask_source
    length = _sequence_length(base.shape)
    marks = None
    if counter is not None:
        marks = Rows(_position_stream(label_source, mask_source, shift, length, ignore_index))
    with_labels = label_source is not None
    vocab = vocab_size or base.outcomes or next((t.outcomes for t in tests if t.outcomes), None)
    limit = base.reference.top_k if base.reference is not None else None
    comparison = Comparison(reading, base, tuple(tests), tuple(names), top_k, 0, ignore_index, with_labels, vocab,
                            length, limit=limit)
    # A top-K reference's packed rows are narrower than TEST's: blocks are sized by TEST's width.
    block_rows = rows_per_block(tests[0].outcomes or 1) if base.reference is not None else rows_per_block
    aligned = aligned_blocks([_trimmed(source.blocks(rows_per_block(source.outcomes or 1)), vocab_size, source)
                              for source in (base, *tests)],
                             block_rows=block_rows, labels=[source.label for source in (base, *tests)],
                             first_row=start)

    def items():
        for first, blocks in aligned:
            marked = None if marks is None else _take_marks(marks, counter, first, blocks[-1].shape, ignore_index,
                                                            with_labels, shift)
            yield first, blocks, marked

    merged = engine.run(items(), lambda item: map_block(comparison, item), threads=reading.threads, progress=progress)
    rows_read = merged.rows
    if marks is not None and (total := marks.drain()) != rows_read:
        what, verb = ("labels", "hold") if with_labels else ("mask values", "holds")
        raise ShapeError(f"{counter.label} {verb} {total} {what} but the logits have {rows_read} positions; "
                         f"give one {what[:-1]} per position")
    kinds = ([reading.p_kind] + [reading.q_kind] * len(tests) + (["labels"] if with_labels else [])
             + (["mask"] if mask_source else []))
    precision, precision_notes = reading.effective_precision([base, *tests], [reading.p_kind] + [reading.q_kind]
                                                             * len(tests))
    meta = {"inputs": describe_inputs(whole, kinds, [rows_read] * len(whole)), "names": list(names),
            "top_k": top_k, "limit": limit, "vocab": vocab, "length": length, "with_labels": with_labels,
            "mask": mask_source is not None, "shift": shift, "ignore_index": ignore_index,
            "marked": marks is not None, "vocab_size": vocab_size, "extras": extras, "notes": reading.observed,
            "name": base_operand if isinstance(base_operand, str) else "the input",
            "reference": None if base.reference is None else _bound_of(base), "reference_notes": reference_notes,
            "precision": precision, "precision_notes": precision_notes}
    return Piece(engine.Partial(start, start + rows_read, values=merged.values), meta)


def compare_finish(piece: Piece, reading: Reading, *, top_k: int = 5, worst: int = 10,
                   sort: str = "kl.mean") -> Result:
    """compare's Result (nats) of the merged piece: one report per candidate, the first's also at the top level."""
    rows, stats, meta = piece.partial.rows, piece.partial.values, piece.meta
    with_labels, shift, ignore_index = meta["with_labels"], meta["shift"], meta["ignore_index"]
    mask_given = True if meta["mask"] else None
    if not stats:
        why = _left_out_why(with_labels, mask_given, shift, ignore_index)
        raise InputError(f"{meta['name']}: no position was scored (every one is left out: {why}); there is nothing "
                         "to compare")
    comparison = Comparison(reading, None, (), tuple(meta["names"]), min(top_k, meta.get("top_k", top_k)), worst,
                            ignore_index, with_labels, meta["vocab"], meta["length"], sort, meta.get("limit"))
    result = finish(comparison, piece.partial, meta["inputs"])
    if meta["marked"]:
        result.figures["ignored_positions"] = rows - stats["row"].size
        if rows > stats["row"].size:
            result.notes.append(f"{rows - stats['row'].size} of {rows} positions left out "
                                f"({_left_out_why(with_labels, mask_given, shift, ignore_index)}); every statistic "
                                f"is over the {stats['row'].size} scored positions, rows numbered as in the input")
    vocab_size = meta.get("vocab_size")
    if vocab_size is not None:
        result.notes.append(f"--vocab-size {vocab_size}: only the first {vocab_size} outcomes of each row compared, "
                            "each row renormalised over them (for logits, a softmax of the first "
                            f"{vocab_size} logits)")
    result.figures.update(meta["extras"])
    if reading.precision == "fast":  # the figure only where fast was asked (the default's keys stay as they were)
        result.figures["precision"] = meta.get("precision", "fast")
        result.notes.extend(meta.get("precision_notes", []))
    result.notes.extend(replace(reading, observed=list(meta["notes"])).notes())
    if meta.get("reference") is not None:
        result.figures["reference"] = meta["reference"]
        result.notes.extend(meta["reference_notes"])
    return result


def compare(base_operand, test_operands, reading: Reading, *, names=None, labels=None, mask=None,
            shift: bool = False, top_k: int = 5, worst: int = 10, ignore_index: int = -100,
            vocab_size: int | None = None, sort: str = "kl.mean", progress=None, tail: str = "bucket") -> Result:
    """The drift report of each TEST against BASE over the scored positions (label not ``ignore_index``, ``mask`` 1).

    Every reported row is the row of the input (one piece: every row).
    """
    piece = compare_map(base_operand, test_operands, reading, None, names=names, labels=labels, mask=mask,
                        shift=shift, top_k=top_k, ignore_index=ignore_index, vocab_size=vocab_size,
                        progress=progress, tail=tail)
    return compare_finish(piece, reading, top_k=top_k, worst=worst, sort=sort)


def _bound_of(base: Source) -> dict:
    from klcli.commands.reference import bound_of

    return bound_of(base)


def where_drifts(kl: np.ndarray, at: np.ndarray, length: int | None) -> dict:
    """One candidate's KL histogram (log-spaced bins) and mean KL per position index (None for 2-D input)."""
    return {"kl_histogram": drift.log_histogram(kl), "kl_by_position": drift.mean_by_position(kl, at, length)}


# Rows are scored in pieces of about this many values, so that the base's arrays (log-probabilities,
# probabilities: 2 MiB each in float64) stay in the processor's cache while every candidate is scored against them.
PIECE_VALUES = 1 << 18


def map_block(comparison: Comparison, item) -> engine.Partial:
    """One block of aligned rows → its partial: the base converted once, every candidate scored against it.

    The block is scored in pieces of :data:`PIECE_VALUES` (rows are independent, so the figures are the
    same), merged into the block's partial.
    """
    start, blocks, marked = item
    count, width = blocks[0].shape
    step = max(1, PIECE_VALUES // max(1, width))
    if count <= step:
        return _map_rows(comparison, start, blocks, marked)
    return engine.merge(_map_rows(comparison, start + at, [block[at:at + step] for block in blocks],
                                  None if marked is None else marked[at:at + step])
                        for at in range(0, count, step))


def _map_rows(comparison: Comparison, start: int, blocks: list[np.ndarray], marked) -> engine.Partial:
    base_block = blocks[0]
    count = base_block.shape[0]
    with_labels, reading = comparison.with_labels, comparison.reading
    keep = None if marked is None else (marked != comparison.ignore_index if with_labels else marked == 1)
    if keep is not None and keep.all():
        keep = None
    if keep is not None and not keep.any():
        return engine.Partial(start, start + count)
    precise = replace(reading, precision="precise")
    base_rows = kept_log_rows(_converter(precise, reading.p_kind, comparison.base), base_block, keep, start)
    side = BaseSide(base_rows, comparison.top_size)
    base_fast = None  # --precision fast: the base's float32 logits beside its precise rows (top list, confidence)
    if reading.precision == "fast":
        base_fast = kept_log_rows(_converter(reading, reading.p_kind, comparison.base), base_block, keep, start)
        base_fast = base_fast if base_fast.fast else None
    values = {"row": kept_rows(keep, start, count), "base_top1": side.top[:, 0],
              "confidence": side.top1_probability()}
    ids = None
    if with_labels:
        ids = marked if keep is None else marked[keep]
        values.update(label=ids, label_rank_base=label_rank(side.top, ids))
    for index, (test, block) in enumerate(zip(comparison.tests, blocks[1:])):
        test_rows = kept_log_rows(_converter(reading if base_fast else precise, reading.q_kind, test), block, keep,
                                  start)
        test_top = top_k_of(test_rows.shifted, comparison.top_size)
        if base_fast is not None and test_rows.fast:
            converted: list = []  # the test's precise rows, converted once if the fallback or the labels need them

            def exact(test=test, block=block, converted=converted):
                if not converted:
                    converted.append(kept_log_rows(_converter(precise, reading.q_kind, test), block, keep, start))
                return converted[0]

            figures = fast_position_stats(side, base_fast, test_rows, comparison.top_k, exact, test_top=test_top)
            if ids is not None:
                test_rows = exact()
        else:  # (test_rows are precise here: converted so, or not float32 logits)
            figures = position_stats(side, test_rows, comparison.top_k, test_top=test_top)
        del figures["base_top1"]
        if ids is not None:
            tokens = label_stats(base_rows, test_rows, ids, values["row"])
            values["nll_base"] = tokens.pop("nll_base")
            figures.update(tokens, label_rank_test=label_rank(test_top, ids))
        values.update({candidate_key(index, name): array for name, array in figures.items()})
    return engine.Partial(start, start + count, values=values)


def _converter(reading: Reading, kind: str, source: Source):
    """``(block, first_row) → LogRows`` for ``source``'s rows."""
    return lambda block, first_row: reading.log_rows(block, kind, source, first_row)


def finish(comparison: Comparison, merged: engine.Partial, inputs: list[dict]) -> Result:
    """The merged partial → the Result: one report per candidate; the first's figures also at the top level."""
    stats, rows = merged.values, merged.rows
    at = stats["row"]  # the input row of each scored position
    reports = [_candidate(comparison, stats, index, rows) for index in range(comparison.candidates)]
    first = reports[0]
    figures = {"vocab": comparison.vocab, **first["head"]}
    if comparison.with_labels:
        ppl = first["perplexity"]
        figures["tokens"] = int(at.size)
        figures["ppl_base"] = ppl["ppl_base"]
        figures.update(first["labels"])
        figures["ppl_base_stderr"] = ppl["ppl_base_stderr"]
        figures.update(first["ppl_figures"])
    figures["worst"] = first["worst"]
    if comparison.with_labels:
        figures["label_in_topk"] = first["label_in_topk"]
    figures["by_confidence"] = first["by_confidence"]
    figures.update({key: first["entry"][key] for key in ("kl_histogram", "kl_by_position")})
    figures["tests"] = [report["entry"] for report in reports]
    figures["ranking"] = ranking(comparison.sort, [report["entry"] for report in reports])
    warnings = list(dict.fromkeys(w for report in reports for w in report["warnings"]))
    return Result(
        command="compare",
        headline="mean D(base‖test)" if len(reports) == 1 else f"mean D(base‖{comparison.names[0]})",
        value=first["metrics"]["kl"]["mean"],
        rows=rows,
        inputs=inputs,
        summary=first["metrics"]["kl"],
        metrics=first["metrics"],
        figures=figures,
        per_row=first["per_row"],
        warnings=warnings,
        information=_INFORMATION,
    )


def _candidate(comparison: Comparison, stats: dict, index: int, rows: int) -> dict:
    """Candidate ``index``'s figures: its summaries, head figures, label figures, buckets and worst positions."""
    own = {name[len(candidate_key(index, "")):]: values for name, values in stats.items()
           if name.startswith(candidate_key(index, ""))}
    at = stats["row"]
    scored = int(at.size)
    kl = summarize(own["kl"], at)
    agree = stats["base_top1"] == own["test_top1"]
    agreement = float(np.mean(agree))
    metrics = {"kl": kl, "kl_reverse": summarize(own["kl_reverse"], at), "js": summarize(own["js"], at),
               "tv": summarize(own["tv"], at)}
    head = {"top1_agreement": agreement, "top1_agreement_stderr": agreement_stderr(agreement, scored),
            "top_k": comparison.top_k, "topk_overlap": float(np.mean(own["topk_overlap"]))}
    if scored == rows:
        agree_per_row = agree
    else:  # null where the position was left out
        agree_per_row = np.full(rows, None, dtype=object)
        agree_per_row[at] = agree
    per_row = {"kl": _spread(own["kl"], at, rows), "kl_reverse": _spread(own["kl_reverse"], at, rows),
               "js": _spread(own["js"], at, rows), "tv": _spread(own["tv"], at, rows),
               "top1_agree": agree_per_row, "topk_overlap": _spread(own["topk_overlap"], at, rows)}
    report: dict = {"warnings": []}
    entry: dict = {"name": comparison.names[index]}
    if comparison.with_labels:
        nll_base, nll_test, delta_p = stats["nll_base"], own["nll_test"], own["delta_p"]
        ln_ratio, ln_ratio_stderr = paired_difference(nll_test, nll_base)
        delta = summarize(delta_p, at)
        delta["rms"], delta["rms_stderr"] = rms_figures(delta_p)
        metrics["delta_p"] = delta
        ppl = perplexity_figures(nll_base, nll_test)
        report["perplexity"] = ppl
        report["labels"] = {"ppl_test": ppl["ppl_test"], "ppl_ratio": perplexity_of(ln_ratio),
                            "ln_ppl_ratio": ln_ratio, "ln_ppl_ratio_stderr": ln_ratio_stderr,
                            "nll_correlation": nll_correlation(nll_base, nll_test)}
        report["ppl_figures"] = {"ppl_test_stderr": ppl["ppl_test_stderr"], "delta_ppl": ppl["delta_ppl"],
                                 "delta_ppl_stderr": ppl["delta_ppl_stderr"]}
        report["label_in_topk"] = {side: {str(k): float(np.mean(ranks < k)) for k in comparison.ks}
                                   for side, ranks in (("base", stats["label_rank_base"]),
                                                       ("test", own["label_rank_test"]))}
        if not (math.isfinite(ppl["ppl_base"]) and math.isfinite(ppl["ppl_test"])):
            report["warnings"].append(_INF_PERPLEXITY)
        per_row.update({"nll_base": _spread(nll_base, at, rows), "nll_test": _spread(nll_test, at, rows),
                        "delta_p": _spread(delta_p, at, rows)})
    report["by_confidence"] = confidence_buckets(stats["confidence"], own["kl"], agree)
    report["worst"] = _worst(comparison, stats, own, at)
    entry.update(metrics)
    entry.update(head)
    if comparison.with_labels:
        entry.update(report["labels"])
        entry.update(report["ppl_figures"])
        entry["label_in_topk"] = report["label_in_topk"]
    entry["by_confidence"] = report["by_confidence"]
    entry.update(where_drifts(own["kl"], at, comparison.sequence_length))
    entry["worst"] = report["worst"]
    report.update(metrics=metrics, head=head, per_row=per_row, entry=entry)
    return report


def _worst(comparison: Comparison, stats: dict, own: dict, at: np.ndarray) -> list[dict]:
    """The positions of largest D(base‖test), ties by lower row (a stable sort of −kl), named in full."""
    order = np.argsort(-own["kl"], kind="stable")[:comparison.worst]
    length = comparison.sequence_length
    entries = []
    for i in order:
        row = int(at[i])
        label = int(stats["label"][i]) if comparison.with_labels else None
        entries.append({
            "row": row,
            "sequence": row // length if length else None,
            "position": row % length if length else None,
            "kl": float(own["kl"][i]),
            "base_top1": int(stats["base_top1"][i]),
            "test_top1": int(own["test_top1"][i]),
            "label": label,
            "p_label_base": math.exp(-float(stats["nll_base"][i])) if comparison.with_labels else None,
            "p_label_test": math.exp(-float(own["nll_test"][i])) if comparison.with_labels else None,
        })
    return entries


def ranking(sort: str, entries: list[dict]) -> dict:
    """The leaderboard's order: candidates by ``sort`` (a dotted key as --check takes), best first.

    Divergences and losses rank ascending, agreements (:data:`AGREEMENTS`) descending; an undefined figure
    ranks last; ties keep the command line's order.
    """
    from klcli.checks import MISSING, available, lookup

    descending = sort.split(".")[0] in AGREEMENTS
    keyed = []
    for position, entry in enumerate(entries):
        value = lookup({**entry, "summary": entry["kl"]}, sort)  # a bare name, as in --check: kl's
        if value is MISSING or isinstance(value, (dict, list, str, bool)):
            raise UsageError(f"--sort {sort!r}: no such figure of a candidate; available: "
                             f"{available({k: v for k, v in entry.items() if k != 'name'})}")
        undefined = value is None or (isinstance(value, float) and math.isnan(value))
        rank = 0.0 if undefined else (-value if descending else value)
        keyed.append((undefined, rank, position))
    order = [position for *_, position in sorted(keyed)]
    return {"key": sort, "order": "descending" if descending else "ascending",
            "names": [entries[position]["name"] for position in order]}


def _left_out_why(with_labels: bool, mask: Source | bool | None, shift: bool, ignore_index: int) -> str:
    reasons = [f"label --ignore-index {ignore_index}"] if with_labels else []
    if mask is not None:
        reasons.append("--mask 0")
    if shift:
        reasons.append("--shift: the last position of each sequence")
    return ", ".join(reasons)


def _take_marks(marks: Rows, source: Source, start: int, shape: tuple, ignore_index: int,
                with_labels: bool, shift: bool) -> np.ndarray:
    """The next block's labels (checked against the vocabulary), or its mask as 0/1."""
    count, vocab = shape
    taken = marks.take(count)
    what, verb = ("labels", "hold") if with_labels else ("mask values", "holds")
    if taken is None or taken.shape[0] != count:
        have = marks.drain()
        raise ShapeError(f"{source.label} {verb} {have} {what} but the logits have more than {have} positions; "
                         f"give one {what[:-1]} per position")
    ids = taken[:, 0]
    if with_labels:
        outside = (ids != ignore_index) & ((ids < 0) | (ids >= vocab))
        if outside.any():
            at = int(np.flatnonzero(outside)[0]) + shift  # with --shift, position t holds label t+1
            raise ShapeError(f"{source.label}: the label at position {start + at} is {int(ids[at - shift])}, "
                             f"outside the vocabulary [0, {vocab}) (ignored positions use --ignore-index "
                             f"{ignore_index})")
    return ids


def _spread(values: np.ndarray, at: np.ndarray, rows: int) -> np.ndarray:
    """Per-row values over every input row: the kept rows' values at their rows, NaN (null) elsewhere."""
    if at.size == rows:
        return values
    full = np.full(rows, np.nan)
    full[at] = values
    return full


