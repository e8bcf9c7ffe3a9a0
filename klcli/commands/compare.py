"""``compare``: a drift report between two models' outputs at the same positions, for CI gates."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from klcli import engine
from klcli.commands.common import Reading, describe_inputs, open_operands, open_pair
from klcli.commands.perplexity import _sequence_length
from klcli.core import drift
from klcli.core.compare import agreement_stderr, label_stats, nll_correlation, paired_difference, position_stats
from klcli.core.perplexity import INF_PERPLEXITY as _INF_PERPLEXITY
from klcli.core.perplexity import as_token_ids, perplexity_of, shifted_labels
from klcli.core.positions import as_position_mask, kept_log_rows, kept_rows, masked_labels
from klcli.core.stats import summarize
from klcli.engine import Rows, paired_blocks
from klcli.errors import InputError, ShapeError, UsageError
from klcli.io.ranges import position_count, position_range, row_count, row_range
from klcli.io.source import Source, rows_per_block
from klcli.pieces import Layout, Piece, reads_stdin
from klcli.result import Result

# The information quantities among the per-position figures (nats, reported in the chosen unit at delivery).
_INFORMATION = {"kl": 1.0, "kl_reverse": 1.0, "js": 1.0, "nll_base": 1.0, "nll_test": 1.0, "worst.kl": 1.0,
                **{f"{where}{key}": 1.0 for where in ("", "tests.")
                   for key in ("kl_histogram.edges", "kl_by_position")}}


def _check_shapes(base: Source, test: Source) -> None:
    known = None not in base.shape and None not in test.shape
    if known and (base.shape[-1] != test.shape[-1] or math.prod(base.shape[:-1]) != math.prod(test.shape[:-1])):
        raise ShapeError(f"{base.label} has shape {base.shape_text} but {test.label} has shape {test.shape_text}; "
                         "compare needs the same positions and vocabulary")


def _check_positions(base: Source, counter: Source | None) -> None:
    """Labels (or a mask) of known size hold one value per position of the logits: else both counts, up front."""
    if counter is None or None in base.shape or None in counter.shape or len(base.shape) < 2:
        return
    positions, values = math.prod(base.shape[:-1]), math.prod(counter.shape)
    if positions != values:
        what, verb = ("mask values", "holds") if counter.role == "mask" else ("labels", "hold")
        raise ShapeError(f"{counter.label} {verb} {values} {what} but {base.label} has {positions} positions; give "
                         f"one {what[:-1]} per position")


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


def compare(base_operand, test_operand, reading: Reading, *, labels=None, mask=None, shift: bool = False,
            top_k: int = 5, worst: int = 10, ignore_index: int = -100,
            progress=None, tail: str = "bucket") -> Result:
    """The drift report over the scored positions: those whose label is not ``ignore_index`` and ``mask`` keeps.

    Left-out positions are not read as distributions (padding may hold anything); every reported row is the
    row of the input.
    """
    piece = compare_map(base_operand, test_operand, reading, None, labels=labels, mask=mask, shift=shift,
                        top_k=top_k, ignore_index=ignore_index, progress=progress, tail=tail)
    return compare_finish(piece, reading, top_k=top_k, worst=worst)


def _compare_sources(base_operand, test_operand, labels, mask, shift: bool, tail: str, reading: Reading | None = None,
                     top_k: int = 5):
    """BASE, TEST, the labels and the mask opened and checked against each other; compare's figures from the
    opening (the tail bucket), the top-k a top-K reference BASE allows, and the notes it earns."""
    base, test, extras = open_pair(base_operand, test_operand, ("BASE", "TEST"), tail)
    label_source = open_operands((labels, "labels"))[0] if labels is not None else None
    mask_source = open_operands((mask, "mask"))[0] if mask is not None else None
    _check_shapes(base, test)
    reference_notes: list[str] = []
    if any(source is not None and source.reference is not None for source in (base, test, label_source, mask_source)):
        from klcli.commands.reference import check_reference_pair, compare_top_k, refuse_reference

        refuse_reference(label_source, "--labels")
        refuse_reference(mask_source, "--mask")
        if reading is not None:
            check_reference_pair(base, test, reading)
        if base.reference is not None:
            top_k, reference_notes = compare_top_k(base, top_k, shift=shift and labels is None)
    if labels is None and base.labels is not None:  # a llama.cpp base file carries its tokens
        label_source = Source(base.operand, base.path, base.format, base.shape[:-1], "int32", base.labels,
                              role="labels")
    for counted in (label_source, mask_source):
        _check_positions(base, counted)
    if shift and label_source is None:
        raise UsageError("--shift scores position t against label t+1; it needs --labels IDS")
    return base, test, label_source, mask_source, extras, top_k, reference_notes


def compare_layout(base_operand, test_operand, *, labels=None, mask=None, shift: bool = False,
                   tail: str = "bucket") -> Layout:
    """The positions compare's pieces divide, cut at sequence boundaries ((B, T, V) logits)."""
    from klcli.io.openai import is_logprobs_json

    if is_logprobs_json(base_operand) or is_logprobs_json(test_operand):
        return Layout(None, why="logprobs files are aligned as a whole")
    if reads_stdin(base_operand, test_operand, labels, mask):
        return Layout(None, why="standard input is read once")
    base, test, label_source, mask_source, *_ = _compare_sources(base_operand, test_operand, labels, mask, shift,
                                                                  tail)
    total = row_count(base)
    counts = [position_count(source) for source in (label_source, mask_source) if source is not None]
    if total is None or row_count(test) is None or None in counts:
        return Layout(None, why="a text table's length is known only once it is read")
    length = _sequence_length(base.shape)
    if shift and not length:
        return Layout(None, why="--shift over one sequence (N, V) reads it whole")
    return Layout(total, length or 1)


def compare_map(base_operand, test_operand, reading: Reading, rows=None, *, labels=None, mask=None,
                shift: bool = False, top_k: int = 5, ignore_index: int = -100, progress=None,
                tail: str = "bucket") -> Piece:
    """Positions [a, b) (every one if ``rows`` is None) of BASE, TEST, the labels and the mask: the piece."""
    base, test, label_source, mask_source, extras, top_k, reference_notes = _compare_sources(
        base_operand, test_operand, labels, mask, shift, tail, reading, top_k)
    whole = [base, test] + [s for s in (label_source, mask_source) if s is not None]
    start = 0
    if rows is not None:
        start, stop = rows
        base, test = row_range(base, start, stop), row_range(test, start, stop)
        label_source, mask_source = (None if source is None else position_range(source, start, stop)
                                     for source in (label_source, mask_source))
    reading = replace(reading, observed=[])
    base = reading.checked(base, reading.p_kind, reading.p_kind_given)
    test = reading.checked(test, reading.q_kind, reading.q_kind_given)
    sources = [base, test] + [s for s in (label_source, mask_source) if s is not None]
    counter = label_source or mask_source
    marks = None
    if counter is not None:
        marks = Rows(_position_stream(label_source, mask_source, shift, _sequence_length(base.shape), ignore_index))
    with_labels = label_source is not None
    pairs = paired_blocks(base.blocks(rows_per_block(base.outcomes or 1)),
                          test.blocks(rows_per_block(test.outcomes or 1)),
                          block_rows=rows_per_block(test.outcomes or 1) if base.reference else rows_per_block,
                          p_label=base.label, q_label=test.label, broadcast=False, same_width=not base.reference,
                          first_row=start)

    def items():
        for start, base_block, test_block in pairs:
            marked = None if marks is None else _take_marks(marks, counter, start, test_block.shape, ignore_index,
                                                            with_labels, shift)
            yield start, base_block, test_block, marked

    def work(item):
        start, base_block, test_block, marked = item
        count = base_block.shape[0]
        keep = None if marked is None else (marked != ignore_index if with_labels else marked == 1)
        if keep is not None and keep.all():
            keep = None
        if keep is not None and not keep.any():
            return engine.Partial(start, start + count)
        base_rows = kept_log_rows(lambda b, at: reading.log_rows(b, reading.p_kind, base, at), base_block, keep,
                                  start)
        test_rows = kept_log_rows(lambda b, at: reading.log_rows(b, reading.q_kind, test, at), test_block, keep,
                                  start)
        figures = position_stats(base_rows, test_rows, top_k)
        figures["row"] = kept_rows(keep, start, count)
        if with_labels:
            ids = marked if keep is None else marked[keep]
            figures.update(label=ids, **label_stats(base_rows, test_rows, ids))
        return engine.Partial(start, start + count, values=figures)

    merged = engine.run(items(), work, threads=reading.threads, progress=progress)
    rows = merged.rows
    if marks is not None and (total := marks.drain()) != rows:
        what, verb = ("labels", "hold") if with_labels else ("mask values", "holds")
        raise ShapeError(f"{counter.label} {verb} {total} {what} but the logits have {rows} positions; "
                         f"give one {what[:-1]} per position")
    kinds = [reading.p_kind, reading.q_kind] + (["labels"] if with_labels else []) + (["mask"] if mask_source else [])
    meta = {"inputs": describe_inputs(whole, kinds, [rows] * len(sources)), "vocab": base.outcomes or test.outcomes,
            "with_labels": with_labels, "mask": mask_source is not None, "shift": shift,
            "ignore_index": ignore_index, "marked": marks is not None, "extras": extras, "notes": reading.observed,
            "name": base_operand if isinstance(base_operand, str) else "the input",
            "length": _sequence_length(base.shape), "top_k": top_k, "reference_notes": reference_notes,
            "reference": None if base.reference is None else _bound_of(base)}
    return Piece(engine.Partial(start, start + rows, values=merged.values), meta)


def compare_finish(piece: Piece, reading: Reading, *, top_k: int = 5, worst: int = 10) -> Result:
    """compare's Result (nats) of the merged piece."""
    rows, stats, meta = piece.partial.rows, piece.partial.values, piece.meta
    with_labels, shift, ignore_index = meta["with_labels"], meta["shift"], meta["ignore_index"]
    mask_given = True if meta["mask"] else None
    if not stats:
        why = _left_out_why(with_labels, mask_given, shift, ignore_index)
        raise InputError(f"{meta['name']}: no position was scored (every one is left out: {why}); there is nothing "
                         "to compare")
    top_k = min(top_k, meta.get("top_k", top_k))  # (a top-K reference BASE allows at most its K)
    result = _report(stats, rows, meta["vocab"], top_k, worst, meta["inputs"])
    result.figures.update(where_drifts(stats["kl"], stats["row"], meta.get("length")))
    if meta["marked"]:
        result.figures["ignored_positions"] = rows - stats["row"].size
        if rows > stats["row"].size:
            result.notes.append(f"{rows - stats['row'].size} of {rows} positions left out "
                                f"({_left_out_why(with_labels, mask_given, shift, ignore_index)}); every statistic "
                                f"is over the {stats['row'].size} scored positions, rows numbered as in the input")
    result.figures.update(meta["extras"])
    result.notes.extend(replace(reading, observed=list(meta["notes"])).notes())
    if meta.get("reference") is not None:
        result.figures["reference"] = meta["reference"]
        result.notes.extend(meta["reference_notes"])
    return result


def _bound_of(base: Source) -> dict:
    from klcli.commands.reference import bound_of

    return bound_of(base)


def where_drifts(kl: np.ndarray, at: np.ndarray, length: int | None) -> dict:
    """One candidate's KL histogram (log-spaced bins) and mean KL per position index (None for 2-D input)."""
    return {"kl_histogram": drift.log_histogram(kl), "kl_by_position": drift.mean_by_position(kl, at, length)}


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


def _report(stats, rows, vocab, top_k, worst, inputs) -> Result:
    at = stats["row"]  # the input row of each scored position
    scored = int(at.size)
    kl = summarize(stats["kl"], at)
    agree = stats["base_top1"] == stats["test_top1"]
    agreement = float(np.mean(agree))
    metrics = {
        "kl": kl,
        "kl_reverse": summarize(stats["kl_reverse"], at),
        "js": summarize(stats["js"], at),
        "tv": summarize(stats["tv"], at),
    }
    figures = {
        "vocab": vocab,
        "top1_agreement": agreement,
        "top1_agreement_stderr": agreement_stderr(agreement, scored),
        "top_k": top_k,
        "topk_overlap": float(np.mean(stats["topk_overlap"])),
    }
    if scored == rows:
        agree_per_row = agree
    else:  # null where the position was left out
        agree_per_row = np.full(rows, None, dtype=object)
        agree_per_row[at] = agree
    per_row = {"kl": _spread(stats["kl"], at, rows), "kl_reverse": _spread(stats["kl_reverse"], at, rows),
               "js": _spread(stats["js"], at, rows), "tv": _spread(stats["tv"], at, rows),
               "top1_agree": agree_per_row, "topk_overlap": _spread(stats["topk_overlap"], at, rows)}
    warnings: list[str] = []
    if "label" in stats:
        nll_base, nll_test, delta_p = stats["nll_base"], stats["nll_test"], stats["delta_p"]
        ln_ratio, ln_ratio_stderr = paired_difference(nll_test, nll_base)
        delta = summarize(delta_p, at)
        delta["rms"] = float(np.sqrt(np.mean(delta_p**2)))
        figures.update({
            "tokens": scored,
            "ppl_base": perplexity_of(float(np.mean(nll_base))),
            "ppl_test": perplexity_of(float(np.mean(nll_test))),
            "ppl_ratio": perplexity_of(ln_ratio),
            "ln_ppl_ratio": ln_ratio,
            "ln_ppl_ratio_stderr": ln_ratio_stderr,
            "nll_correlation": nll_correlation(nll_base, nll_test),
        })
        metrics["delta_p"] = delta
        if not (math.isfinite(figures["ppl_base"]) and math.isfinite(figures["ppl_test"])):
            warnings.append(_INF_PERPLEXITY)
        per_row.update({"nll_base": _spread(nll_base, at, rows),
                        "nll_test": _spread(nll_test, at, rows),
                        "delta_p": _spread(delta_p, at, rows)})
    # The worst positions: largest D(base‖test), ties by lower row (a stable sort of −kl).
    order = np.argsort(-stats["kl"], kind="stable")[:worst]
    figures["worst"] = [
        {"row": int(at[i]), "kl": float(stats["kl"][i]), "base_top1": int(stats["base_top1"][i]),
         "test_top1": int(stats["test_top1"][i]),
         **({"label": int(stats["label"][i])} if "label" in stats else {})}
        for i in order
    ]
    return Result(
        command="compare",
        headline="mean D(base‖test)",
        value=kl["mean"],
        rows=rows,
        inputs=inputs,
        summary=kl,
        metrics=metrics,
        figures=figures,
        per_row=per_row,
        warnings=warnings,
        information=_INFORMATION,
    )
