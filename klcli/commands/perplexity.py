"""``perplexity`` and ``xent --labels``: token log-likelihoods from logits and labels, or from log-probs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from klcli import engine
from klcli.commands.common import effective_precision, logits_checked, open_operands
from klcli.core.perplexity import (
    IGNORE_INDEX,
    INF_PERPLEXITY,
    as_token_ids,
    corpus_perplexity,
    sequence_perplexities,
    shifted_labels,
    token_nll,
)
from klcli.core.stats import summarize
from klcli.engine import paired_blocks, threads_note
from klcli.errors import InputError, RowCountError, ShapeError, UsageError
from klcli.io.ranges import driving_cuts, position_count, position_range, row_count, row_range
from klcli.io.source import Source, rows_per_block
from klcli.pieces import Layout, Piece, reads_stdin
from klcli.result import Result

# The information quantities of perplexity and xent --labels (nats, reported in the chosen unit at delivery).
INFORMATION = {"nll": 1.0, "nll_stderr": 1.0, "cross_entropy": 1.0}
LOGITS_FIX = ("if these are probabilities, save their logarithm (numpy.log: log-probabilities are valid "
              "logits) and pass that")


@dataclass(frozen=True)
class TokenReading:
    """How to turn an operand into per-token losses."""

    kind: str = "logits"
    labels: str | None = None
    ignore_index: int = IGNORE_INDEX
    shift: bool = False
    temperature: float = 1.0
    label_smoothing: float = 0.0
    group: str | None = None
    threads: int = 0  # 0: every core available to the process
    precision: str = "precise"  # or "fast": log Σ e^z in float32 arithmetic for float32/float16 logits
    kind_given: bool = True  # False where logits are the command's default (perplexity LOGITS, xent --labels)
    observed: list = field(default_factory=list, compare=False)  # notes made while reading


@dataclass
class TokenScores:
    """Per-token losses (nats) of the counted tokens, and per-sequence sums.

    ``at`` is each counted token's position in the input, 0-based over every
    position read (ignored ones and padding included; row·T + column for a
    2-D padded array), so that ``argmax`` names the input's position (SPEC §4).
    ``sequence_sums`` and ``sequence_tokens`` cover every sequence read, 0
    tokens for one that is all padding.
    """

    losses: np.ndarray
    sequence_sums: np.ndarray
    sequence_tokens: np.ndarray
    positions: int
    inputs: list[dict]
    at: np.ndarray | None = None
    precision: str = "precise"  # what the losses were computed at (--precision fast only where it applies)
    notes: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # further JSON keys (a top-K reference's ``reference``)


def _by_sequence(losses: np.ndarray, sequence: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence loss sums and token counts over ``count`` sequences (at least), summed once over the merged
    values in row order; a sequence read but all padding keeps 0 tokens."""
    size = max(count, int(sequence.max()) + 1 if sequence.size else 0)
    return (np.bincount(sequence, weights=losses, minlength=size),
            np.bincount(sequence, minlength=size).astype(np.int64))


def _sequence_length(shape: tuple) -> int | None:
    """Positions per sequence: the second-to-last axis of a (B, T, V) input; None for one sequence."""
    return shape[-2] if len(shape) >= 3 else None


def _labels_match(logits: Source, labels: Source) -> None:
    leading = logits.shape[:-1]
    if None in leading or None in labels.shape:
        return  # a text table: its length is checked as it streams
    if tuple(labels.shape) == tuple(leading) or (len(labels.shape) == 1 and labels.shape[0] == math.prod(leading)):
        return
    raise ShapeError(f"{labels.label} have shape {tuple(labels.shape)} but the {logits.label} have "
                     f"shape {tuple(logits.shape)}; labels need the logits' leading shape {tuple(leading)}")


def logit_losses(logits: Source, label_stream: Iterable[np.ndarray], labels_label: str, *, ignore_index: int,
                 temperature: float = 1.0, label_smoothing: float = 0.0, threads: int = 0, fast: bool = False,
                 progress=None, first_row: int = 0) -> engine.Partial:
    """The merged partial of every position: ``loss`` (nats, 0 where ignored) and ``counted``, per row.

    ``label_stream`` yields 1-D arrays of token ids in order, in blocks of any size.
    """
    pairs = paired_blocks(logits.blocks(rows_per_block(logits.outcomes or 1)),
                          (ids.reshape(-1, 1) for ids in label_stream), block_rows=rows_per_block,
                          p_label=logits.label, q_label=labels_label, broadcast=False, same_width=False,
                          first_row=first_row)

    def work(item) -> engine.Partial:
        start, block, ids = item
        loss, counted = token_nll(block, ids[:, 0], temperature=temperature, ignore_index=ignore_index,
                                  label_smoothing=label_smoothing, label=logits.label, first_position=start,
                                  fast=fast, **{"kind": logits.forced_kind or "logits", **logits.kernel_options})
        return engine.Partial(start, start + loss.size, {"loss": loss, "counted": counted})

    return engine.run(pairs, work, threads=threads, progress=progress)


def _logit_sources(operand: str, reading: TokenReading) -> tuple[Source, Source]:
    """The logits and their labels (``--labels``, or the tokens a llama.cpp base file carries), shapes checked."""
    (logits,) = open_operands((operand, "logits"))
    if reading.labels is not None:
        (labels,) = open_operands((reading.labels, "labels"))
        if labels.reference is not None:
            from klcli.commands.reference import refuse_reference

            refuse_reference(labels, "--labels")
    elif logits.labels is not None:  # a llama.cpp base file carries its tokens
        labels = Source(logits.operand, logits.path, logits.format, logits.shape[:-1], "int32", logits.labels,
                        role="labels")
    else:
        raise UsageError("logits need --labels IDS (the observed token ids); for per-token log-probabilities "
                         "use --kind logprobs")
    if logits.reference is not None:  # a top-K reference file: its labels' log-probabilities are stored, exactly
        from klcli.commands.reference import check_reference_reading

        check_reference_reading(logits, reading.temperature, label_smoothing=reading.label_smoothing)
        if reading.shift and reading.labels is None:
            raise UsageError(f"--shift: {logits.label}'s stored labels are already those of its positions; drop "
                             "--shift")
    if len(logits.shape) < 2 or logits.shape[-1] is None:
        raise InputError(f"{logits.label}: logits need a vocabulary axis: shape (N, V) or (B, T, V), "
                         f"got {tuple(logits.shape)}")
    _labels_match(logits, labels)
    return logits, labels


def _logits_map(operand: str, reading: TokenReading, rows, progress) -> Piece:
    """Positions [a, b) (every one if ``rows`` is None) of the logits and labels: per position, loss and counted."""
    logits, labels = _logit_sources(operand, reading)
    start = 0
    if rows is not None:
        start, stop = rows
        logits, labels = row_range(logits, start, stop), position_range(labels, start, stop)
    observed: list = []
    logits = logits_checked(logits, given=reading.kind_given, notes=observed,
                            fix=f"{LOGITS_FIX}, or pass --kind logits to read them as logits anyway")
    length = _sequence_length(logits.shape)
    label_rows = rows_per_block(1)

    def label_blocks():
        position = start
        for block in labels.blocks(label_rows):
            ids = as_token_ids(block, label=labels.label, first_position=position)
            position += ids.size
            yield ids

    stream = shifted_labels(label_blocks(), length, reading.ignore_index) if reading.shift else label_blocks()
    try:
        merged = logit_losses(logits, stream, labels.label, ignore_index=reading.ignore_index,
                              temperature=reading.temperature, label_smoothing=reading.label_smoothing,
                              threads=reading.threads, fast=reading.precision == "fast", progress=progress,
                              first_row=start)
    except RowCountError as exc:
        raise ShapeError(f"{labels.label} (shape {labels.shape_text}) do not match the {logits.label} "
                         f"(shape {logits.shape_text}): {exc}") from None
    positions = merged.rows
    inputs = [dict(logits.describe(positions), kind=logits.forced_kind or "logits"),
              dict(labels.describe(positions), kind="labels")]
    precision, notes = effective_precision(reading.precision, [logits], ["logits"], temperature=reading.temperature,
                                           smoothing=reading.label_smoothing)
    reference = logits.reference
    meta = {"inputs": inputs, "precision": precision, "precision_notes": notes, "notes": observed,
            "length": length, "name": operand if isinstance(operand, str) else "the input",
            # A top-K reference's label figures are exact (its labels' log-probabilities are stored).
            "figures": {} if reference is None else {
                "reference": {"top_k": reference.top_k, "vocab": reference.vocab, "bound": "exact"}}}
    return Piece(engine.Partial(start, start + positions, merged.per_row), meta)


def _logits_scores(piece: Piece) -> TokenScores:
    merged, meta = piece.partial, piece.meta
    positions, length = merged.rows, meta["length"]
    counted = merged.per_row.get("counted", np.zeros(0, dtype=bool))
    at = np.flatnonzero(counted)  # the input position of each counted token
    losses = merged.per_row["loss"][counted] if positions else np.zeros(0)
    sequence = at // length if length else np.zeros_like(at)
    sums, tokens = _by_sequence(losses, sequence, -(-positions // length) if length else int(positions > 0))
    return TokenScores(losses, sums, tokens, positions, meta["inputs"], at, meta["precision"],
                       list(meta["precision_notes"]) + list(meta["notes"]), dict(meta.get("figures", {})))


def token_layout(operand, reading: TokenReading) -> Layout:
    """The positions the pieces of logits and labels divide, cut at sequence boundaries."""
    from klcli.io.openai import is_logprobs_json

    if reading.kind != "logits" or is_logprobs_json(operand):
        return Layout(None, why="per-token log-probabilities are read in one piece")
    if reads_stdin(operand, reading.labels):
        return Layout(None, why="standard input is read once")
    logits, labels = _logit_sources(operand, reading)
    total = row_count(logits)
    if total is None or position_count(labels) is None:
        return Layout(None, why="a text table's length is known only once it is read")
    length = _sequence_length(logits.shape)
    if reading.shift and not length:  # one sequence: only its very last position has no next label
        return Layout(None, why="--shift over one sequence (N, V) reads it whole")
    return Layout(total, length or 1, cuts=driving_cuts(total, (logits, "rows"), (labels, "values")))


def _token_losses(values: np.ndarray, kind: str, label: str, first_row: int, padded: bool) -> np.ndarray:
    """−log p of each observed token (NaN stays NaN: padding); invalid values are an error."""
    values = np.asarray(values, dtype=np.float64)
    padding = np.isnan(values)
    if padding.any() and not padded:
        index = int(np.flatnonzero(padding.reshape(-1))[0])
        raise InputError(f"{label}: position {index} is NaN; only a 2-D array (one row per sequence) may be padded "
                         "with NaN")
    if kind == "logprobs":
        bad = ~padding & ((values > 1e-6) | (values == np.inf))
        what = "log-probabilities must be <= 0"
        losses = -np.minimum(values, 0.0)
    else:
        bad = ~padding & ((values < 0) | (values > 1 + 1e-6) | np.isinf(values))
        what = "probabilities must be in [0, 1]"
        with np.errstate(divide="ignore"):
            losses = -np.log(np.minimum(values, 1.0))
    if bad.any():
        row, col = np.argwhere(bad.reshape(values.shape[0], -1))[0]
        raise InputError(f"{label}: row {first_row + row}, position {col} holds {float(values[row, col])!r}; {what}")
    return losses


def _logprobs_map(operand: str, reading: TokenReading, progress) -> Piece:
    if reading.labels is not None:
        raise UsageError(f"--labels goes with --kind logits; --kind {reading.kind} values are already the observed "
                         "tokens' " + ("log-probabilities" if reading.kind == "logprobs" else "probabilities"))
    (source,) = open_operands((operand, reading.kind))
    if source.reference is not None:
        from klcli.commands.reference import refuse_reference

        refuse_reference(source, f"--kind {reading.kind} values (its labels' log-probabilities are read with the "
                         "default --kind)")
    padded = len(source.shape) >= 2
    groups = None
    if reading.group is not None:
        if padded:
            raise UsageError(f"--group {reading.group}: needs one column of per-token values (FILE:COLUMN), "
                             f"not {len(source.shape)}-D rows")
        from klcli.io.tables import group_codes

        groups = group_codes(source, reading.group)
    def items():
        row, read = 0, 0
        for block in source.blocks(rows_per_block(source.outcomes or 1)):
            yield row, read, block
            row, read = row + block.shape[0], read + block.size

    def work(item) -> engine.Partial:
        row, read, block = item
        losses = _token_losses(block, reading.kind, source.label, row, padded)
        counted = ~np.isnan(losses)
        if groups is not None:
            flat = losses.reshape(-1)
            if groups.size != flat.size:
                raise ShapeError(f"--group {reading.group}: has {groups.size} rows but {source.label} has {flat.size}")
            ids = groups.reshape(block.shape)
        else:
            ids = np.broadcast_to((row + np.arange(block.shape[0]))[:, None], block.shape)
        at = (read + np.arange(losses.size)).reshape(losses.shape)
        return engine.Partial(row, row + block.shape[0], counts={"tokens": int(counted.sum()), "values": losses.size},
                              values={"loss": losses[counted], "sequence": ids[counted], "at": at[counted]})

    merged = engine.run(items(), work, threads=1, progress=progress)
    row, read = merged.rows, merged.counts.get("values", 0)
    count = int(groups.max()) + 1 if groups is not None and groups.size else row if padded else int(row > 0)
    # A 1-D input (a table column) is one vector: report its length, as a Parquet column's shape does.
    inputs = [dict(source.describe(row if padded else read), kind=reading.kind)]
    precision, notes = effective_precision(reading.precision, [source], [reading.kind])
    return Piece(merged, {"inputs": inputs, "precision": precision, "precision_notes": notes, "notes": [],
                          "sequences": count, "name": operand if isinstance(operand, str) else "the input"})


def _logprobs_scores(piece: Piece) -> TokenScores:
    merged, meta = piece.partial, piece.meta
    losses = merged.values.get("loss", np.zeros(0))
    sums, tokens = _by_sequence(losses, merged.values.get("sequence", np.zeros(0, dtype=np.int64)),
                                meta["sequences"])
    return TokenScores(losses, sums, tokens, merged.counts.get("tokens", 0), meta["inputs"],
                       merged.values.get("at", np.zeros(0, dtype=np.int64)), meta["precision"],
                       list(meta["precision_notes"]))


def _as_read(operand, reading: TokenReading) -> TokenReading:
    from klcli.io.openai import is_logprobs_json

    if reading.kind == "logits" and is_logprobs_json(operand):  # the sampled tokens' log-probabilities
        return replace(reading, kind="logprobs")
    return reading


def token_map(operand, reading: TokenReading, rows=None, progress=None) -> Piece:
    """The piece of positions ``rows`` (every one if None): per-position losses, or the counted tokens' values."""
    reading = _as_read(operand, reading)
    if reading.kind == "logits":
        return _logits_map(operand, reading, rows, progress)
    return _logprobs_map(operand, reading, progress)


def scores_of(piece: Piece, reading: TokenReading) -> TokenScores:
    """The token scores of a merged piece; none counted is an error."""
    scores = _logits_scores(piece) if "length" in piece.meta else _logprobs_scores(piece)
    if scores.losses.size == 0:
        raise InputError(f"{piece.meta['name']}: no tokens were counted (every label is --ignore-index "
                         f"{reading.ignore_index}, or every value is padding); there is nothing to score")
    return scores


def token_scores(operand: str, reading: TokenReading, progress=None) -> TokenScores:
    return scores_of(token_map(operand, reading, None, progress), reading)


def _sequence_means(scores: TokenScores) -> np.ndarray:
    """Each sequence's mean loss per token; NaN (null) for a sequence with no counted token."""
    with np.errstate(invalid="ignore"):
        return scores.sequence_sums / scores.sequence_tokens


def _text_counts(counts, option: str, sequences: int) -> float | None:
    """Σ of ``--bytes``/``--words``: one number (the total), or an operand holding one count per sequence."""
    if counts is None:
        return None
    try:
        if not isinstance(counts, (str, int, float)):
            raise ValueError("an array of counts")
        values = np.array([float(counts)])
    except ValueError:
        from klcli.io.operand import read_array

        array, _ = read_array(counts, option)
        values = np.asarray(array, dtype=np.float64).reshape(-1)
        if values.size != sequences:
            raise ShapeError(f"{option} has {values.size} counts but there are {sequences} sequences; give one "
                             "count per sequence (or one total number)") from None
    if not (np.isfinite(values).all() and (values >= 0).all() and values.sum() > 0):
        raise InputError(f"{option}: counts must be finite, >= 0 and not all 0 (the scored text's UTF-8 bytes or "
                         "words)")
    return float(values.sum())


def _exp(nats: float) -> float:
    return math.exp(nats) if nats < 709.78 else math.inf  # beyond float range: inf, as the perplexity itself


def per_text(total_nll: float, byte_count: float | None, word_count: float | None) -> dict:
    """lm-evaluation-harness's tokenizer-free figures: Σ NLL (nats) over the scored text's bytes and words.

    bits_per_byte = Σ NLL / (Σ bytes · ln 2), byte_perplexity = 2^bits_per_byte, word_perplexity =
    exp(Σ NLL / Σ words) (its ``bits_per_byte`` and ``weighted_perplexity`` aggregations): fixed units, never
    scaled by --base.

    Examples
    --------
    >>> per_text(math.log(2) * 10, 5, 2)
    {'bytes': 5.0, 'bits_per_byte': 2.0, 'byte_perplexity': 4.0, 'words': 2.0, 'word_perplexity': 32.0}
    """
    figures: dict = {}
    if byte_count is not None:
        bits = total_nll / (byte_count * math.log(2))
        figures.update(bytes=float(byte_count), bits_per_byte=bits,
                       byte_perplexity=2.0**bits if bits < 1024 else math.inf)
    if word_count is not None:
        figures.update(words=float(word_count), word_perplexity=_exp(total_nll / word_count))
    return figures


def perplexity(operand, reading: TokenReading, *, progress=None, byte_counts=None, word_counts=None) -> Result:
    """Corpus perplexity exp(Σ NLL / Σ tokens), per-token NLL statistics and per-sequence figures.

    ``byte_counts`` and ``word_counts`` (``--bytes``/``--words``) add :func:`per_text`'s figures.
    """
    return perplexity_of_scores(token_scores(operand, reading, progress), reading, byte_counts=byte_counts,
                                word_counts=word_counts)


def perplexity_of_scores(scores: TokenScores, reading: TokenReading, *, byte_counts=None,
                         word_counts=None) -> Result:
    """perplexity's Result from the token scores (of one run, or of merged pieces)."""
    text_figures = per_text(float(np.sum(scores.losses)),
                            _text_counts(byte_counts, "--bytes", scores.sequence_sums.size),
                            _text_counts(word_counts, "--words", scores.sequence_sums.size))
    total, tokens = float(np.sum(scores.losses)), int(scores.losses.size)
    corpus = corpus_perplexity(total, tokens)
    summary = summarize(scores.losses, scores.at)
    with_tokens = scores.sequence_tokens > 0
    per_sequence = sequence_perplexities(scores.sequence_sums, scores.sequence_tokens)
    per_row = {  # one row per sequence read; null for a sequence that is all padding (it is not counted)
        "nll": _sequence_means(scores),
        "perplexity": per_sequence,
        "tokens": scores.sequence_tokens,
    }
    warnings = []
    if not math.isfinite(corpus):
        warnings.append(INF_PERPLEXITY)
    return Result(
        command="perplexity",
        headline="corpus perplexity",
        value=corpus,
        rows=scores.positions,
        inputs=scores.inputs,
        summary=summary,
        summary_name="token nll",
        summary_over="tokens",
        value_has_unit=False,
        figures={
            "perplexity": corpus,
            "nll": summary["mean"],
            "nll_stderr": summary["stderr"],
            "bits_per_token": total / tokens / math.log(2),
            "tokens": tokens,
            "sequences": int(with_tokens.sum()),
            "mean_sequence_perplexity": float(np.mean(per_sequence[with_tokens])),
            "precision": scores.precision,
            **text_figures,
            **scores.figures,
        },
        per_row=per_row,
        notes=scores.notes + threads_note(reading.threads),
        warnings=warnings,
        information=INFORMATION,
    )


def token_cross_entropy(operand, reading: TokenReading, *, progress=None) -> Result:
    """``xent LOGITS --labels IDS``: PyTorch's ``cross_entropy`` (mean over counted tokens)."""
    return cross_entropy_of_scores(token_scores(operand, reading, progress), reading)


def cross_entropy_of_scores(scores: TokenScores, reading: TokenReading) -> Result:
    """``xent --labels``'s Result from the token scores (of one run, or of merged pieces)."""
    summary = summarize(scores.losses, scores.at)
    figures: dict = {"tokens": int(scores.losses.size), "label_smoothing": reading.label_smoothing,
                     "precision": scores.precision, **scores.figures}
    warnings = []
    if not reading.label_smoothing:
        corpus = corpus_perplexity(float(np.sum(scores.losses)), int(scores.losses.size))
        figures["perplexity"] = corpus
        if not math.isfinite(corpus):
            warnings.append(INF_PERPLEXITY)
    return Result(
        command="xent",
        headline="mean token cross-entropy",
        value=summary["mean"],
        rows=scores.positions,
        inputs=scores.inputs,
        summary=summary,
        metrics={"cross_entropy": summary},
        summary_over="tokens",
        figures=figures,
        per_row={
            "cross_entropy": _sequence_means(scores),
            "tokens": scores.sequence_tokens,
        },
        notes=scores.notes + threads_note(reading.threads),
        warnings=warnings,
        information=INFORMATION,
    )
