"""``reference``: write a compact top-K reference file; and what the other commands need to read one.

A reference keeps, per position, a base model's K most probable tokens, their
log-probabilities, the exact log of the rest of the mass and, with labels, each
label's log-probability (see :mod:`klcli.core.reference` and
:mod:`klcli.io.reference`). Every command that takes a BASE or P of logits
accepts one; divergences are then taken on the partition {K tokens} ∪ {tail},
lower bounds of the full-vocabulary figures (exact when K = V).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from klcli import __version__, engine
from klcli.commands.common import Reading, describe_inputs, logits_checked, open_operands
from klcli.core.logspace import as_log_rows
from klcli.core.perplexity import as_token_ids
from klcli.core.positions import kept_log_rows
from klcli.core.reference import Written, reference_of
from klcli.core.stats import summarize
from klcli.engine import paired_blocks
from klcli.errors import LOWER_BOUNDS, InputError, OutputError, RowCountError, ShapeError, UsageError
from klcli.io.source import Source, rows_per_block
from klcli.result import Result

DTYPES = ("float32", "float64")


# --- reading a reference: the checks and figures the other commands add ------------------------------------


def is_reference(source: Source | None) -> bool:
    return source is not None and source.reference is not None


def refuse_reference(source: Source | None, what: str) -> None:
    """A reference where it cannot be read (labels, a mask, per-token values): an error naming the operand."""
    if is_reference(source):
        raise UsageError(f"{source.label}: is a top-K reference file; it is read as P or BASE only, not as {what}")


def check_reference_pair(p_source: Source, q_source: Source, reading: Reading | None = None) -> None:
    """A reference is the first operand only, against a test of its vocabulary, read as it was written."""
    if is_reference(q_source):
        raise UsageError(f"{q_source.label}: is a top-K reference file, which is read as the first operand (P or "
                         "BASE) only; give the full distributions second")
    if not is_reference(p_source):
        return
    layout = p_source.reference
    if q_source.outcomes is not None and q_source.outcomes != layout.vocab:
        raise ShapeError(f"{p_source.label} is a top-K reference over a vocabulary of {layout.vocab} but "
                         f"{q_source.label} has {q_source.outcomes} outcomes per row; both must describe the same "
                         "vocabulary")
    if reading is not None:
        check_reference_reading(p_source, reading.temperature, reading.epsilon)


def check_reference_reading(source: Source, temperature: float, epsilon: float = 0.0,
                            label_smoothing: float = 0.0) -> None:
    layout = source.reference
    if epsilon:
        raise UsageError(f"--epsilon: cannot smooth {source.label}, a top-K reference (the tail's tokens are not "
                         "stored); compare with the full logits to smooth")
    if label_smoothing:
        raise UsageError(f"--label-smoothing needs every token's log-probability, which {source.label} (a top-K "
                         "reference) does not store")
    if not math.isclose(temperature, layout.temperature, rel_tol=1e-12):
        raise UsageError(f"--temperature {temperature:g}: {source.label} was written at temperature "
                         f"{layout.temperature:g}, and its distributions cannot be tempered again; pass "
                         f"--temperature {layout.temperature:g} (it applies to the other side too), or write the "
                         "reference with klcli reference --temperature")


def pair_block_rows(*sources: Source) -> Callable[[int], int]:
    """Rows per block sized by the widest operand: a reference's packed rows are narrow, its test's are V wide."""
    widths = [source.outcomes or 1 for source in sources]
    return lambda width: rows_per_block(max([width, *widths]))


def bound_of(source: Source) -> dict:
    """The JSON ``reference`` figure: K, and whether the divergences are lower bounds or exact (K = V)."""
    layout = source.reference
    return {"top_k": layout.top_k, "vocab": layout.vocab, "bound": "exact" if layout.top_k == layout.vocab else "lower"}


def bound_note(source: Source, divergences: str = "the divergences") -> list[str]:
    layout = source.reference
    if layout.top_k == layout.vocab:
        return [f"{source.label} is a top-K reference with K = V = {layout.vocab}: the figures are exact"]
    return [f"{LOWER_BOUNDS} (top-K reference, K={layout.top_k} of {layout.vocab}): {divergences} are "
            "taken over the K stored tokens and one tail bucket"]


def compare_top_k(base: Source, top_k: int, *, shift: bool = False) -> tuple[int, list[str]]:
    """``--top-k`` against a reference BASE (at most its K), and the notes saying which figures are bounds.

    ``shift``: --shift asked of the stored labels, which are already those of their positions.
    """
    layout = base.reference
    if shift and base.labels is not None:
        raise UsageError(f"--shift: {base.label}'s stored labels are already those of its positions; drop --shift")
    notes = bound_note(base, "KL both ways, JS and total variation")
    if layout.top_k < layout.vocab:
        notes.append("top-1 agreement, top-k overlap, the labels' NLL, perplexities and Δp are exact")
    if top_k > layout.top_k:
        notes.append(f"--top-k {top_k} is more than the reference's K = {layout.top_k}: the top-k overlap is over "
                     f"the top {layout.top_k}")
        top_k = layout.top_k
    return top_k, notes


# --- writing one ---------------------------------------------------------------------------------------------


def _label_blocks(labels: Source):
    position = 0
    for block in labels.blocks(rows_per_block(1)):
        ids = as_token_ids(block, label=labels.label, first_position=position)
        position += ids.size
        yield ids.reshape(-1, 1)


def write_reference(operand, output: str, *, top_k: int, labels=None, kind: str = "logits", kind_given: bool = False,
                    temperature: float = 1.0, ignore_index: int = -100, dtype: str = "float32", threads: int = 0,
                    progress=None) -> Result:
    """Stream ``operand``'s distributions into a top-K reference file at ``output``; a Result describing it."""
    from klcli.io.output import check_output_path
    from klcli.io.reference import FORMAT, VERSION, ReferenceWriter

    check_output_path(output, [o for o in (operand, labels) if isinstance(o, str)])
    import os
    import stat

    if os.path.exists(output) and not stat.S_ISREG(os.stat(output).st_mode):
        raise OutputError(f"-o {output}: a reference is written as a regular file (it is read back by its offsets); "
                          "name a file")
    observed: list[str] = []
    (source,) = open_operands((operand, "logits"))
    if is_reference(source):
        raise UsageError(f"{source.label}: is already a top-K reference file; write a reference from full logits")
    source = logits_checked(source, given=kind_given, notes=observed,
                            fix="pass --kind probs or --kind logprobs if these are probabilities or log-probabilities")
    vocab = source.outcomes
    if len(source.shape) < 2 or vocab is None:
        raise InputError(f"{source.label}: a reference needs rows over a vocabulary: shape (N, V) or (B, T, V), "
                         f"got {source.shape_text}")
    if top_k > vocab:
        raise UsageError(f"--top-k {top_k}: is larger than the vocabulary of {source.label} ({vocab}); use at most "
                         f"{vocab} (K = V keeps every token, and the figures are exact)")
    stored_below = source.kernel_options.get("as_stored_below")
    if stored_below is not None and temperature != 1.0:
        raise UsageError(f"--temperature: {source.label}'s log-probabilities are used as stored; they cannot be "
                         "tempered")
    label_source = None
    if labels is not None:
        (label_source,) = open_operands((labels, "labels"))
        refuse_reference(label_source, "--labels")
    elif source.labels is not None:  # a llama.cpp base file carries its tokens
        label_source = Source(source.operand, source.path, source.format, source.shape[:-1], "int32", source.labels,
                              role="labels")
    options = {"kind": source.forced_kind or kind, **source.kernel_options}
    metadata = {"format": FORMAT, "version": VERSION, "vocab": str(vocab), "top_k": str(top_k),
                "has_labels": "true" if label_source is not None else "false", "ignore_index": str(ignore_index),
                "temperature": repr(float(temperature)), "source": _description(source, options["kind"]),
                "klcli_version": __version__, "as_stored_below": "" if stored_below is None else repr(stored_below)}
    writer = ReferenceWriter(output, vocab=vocab, top_k=top_k, has_labels=label_source is not None,
                             logprob_dtype=dtype, metadata=metadata)
    try:
        blocks = source.blocks(rows_per_block(vocab))
        if label_source is not None:
            items = paired_blocks(blocks, _label_blocks(label_source), block_rows=rows_per_block,
                                  p_label=source.label, q_label=label_source.label, broadcast=False, same_width=False)
        else:
            items = _numbered(blocks)

        def convert(values: np.ndarray, first_row: int):
            return as_log_rows(values, label=source.label, first_row=first_row, temperature=temperature,
                               stored=source.dtype, **options)

        def work(item) -> engine.Partial:
            start, block, ids = item
            labels_here = None if ids is None else ids[:, 0]
            # Positions whose label is --ignore-index are padding: never read (they may hold anything), stored
            # as padding rows (NaN log-probabilities), which commands reading the stored labels skip.
            keep = None if labels_here is None else labels_here != ignore_index
            if keep is not None and keep.all():
                keep = None
            written = Written(np.tile(np.arange(top_k), (block.shape[0], 1)), np.full((block.shape[0], top_k), np.nan),
                              np.full(block.shape[0], np.nan), np.full(block.shape[0], np.nan))
            if keep is None or keep.any():
                kept_labels = labels_here if labels_here is None or keep is None else labels_here[keep]
                kept = reference_of(kept_log_rows(convert, block, keep, start), top_k, kept_labels,
                                    ignore_index=ignore_index, first_row=start,
                                    label=label_source.label if label_source else "labels")
                at = slice(None) if keep is None else keep
                written.ids[at], written.logprobs[at], written.tail[at] = kept.ids, kept.logprobs, kept.tail
                if kept.label_logprobs is not None:
                    written.label_logprobs[at] = kept.label_logprobs
            values = {"ids": written.ids, "logprobs": written.logprobs, "tail": written.tail}
            if labels_here is not None:
                values.update(labels=labels_here, label_logprobs=written.label_logprobs)
            return engine.Partial(start, start + block.shape[0], {"tail_mass": np.exp(written.tail)}, values)

        parts = []
        try:
            for part in engine.blocks(items, work, threads=threads, progress=progress):
                writer.write(part.values["ids"], part.values["logprobs"], part.values["tail"],
                             part.values.get("labels"), part.values.get("label_logprobs"))
                part.values = {}  # written: only the per-row tail mass is kept
                parts.append(part)
        except RowCountError as exc:
            raise ShapeError(f"{label_source.label} do not match the {source.label}: {exc}") from None
        merged = engine.merge(parts)
        if merged.rows == 0:
            raise InputError(f"{source.label}: holds no rows; there is nothing to write")
        leading = [merged.rows] if None in source.shape[:-1] else list(source.shape[:-1])
        writer.metadata["shape"] = ",".join(str(size) for size in leading)
        size = writer.finish()
    finally:
        writer.close()
    tail_mass = merged.per_row["tail_mass"]
    scored = np.flatnonzero(~np.isnan(tail_mass))  # padding positions (ignored labels) have none
    if scored.size == 0:
        raise InputError(f"{source.label}: every position's label is --ignore-index {ignore_index}; there is "
                         "nothing to keep")
    kinds = [options["kind"] if source.forced_kind is None else source.forced_kind] + (["labels"] if label_source
                                                                                          else [])
    sources = [source] + ([label_source] if label_source else [])
    full_bytes = merged.rows * vocab * 4
    return Result(
        command="reference",
        headline="mean tail mass",
        value=float(np.mean(tail_mass[scored])),
        rows=merged.rows,
        inputs=describe_inputs(sources, kinds, [merged.rows] * len(sources)),
        summary=summarize(tail_mass[scored], scored),
        summary_name="tail mass",
        value_has_unit=False,
        figures={"output": output, "format": FORMAT, "format_version": VERSION, "top_k": top_k, "vocab": vocab,
                 "has_labels": label_source is not None, "logprob_dtype": dtype, "bytes": size,
                 "float32_bytes": full_bytes, "compression": full_bytes / size},
        per_row={"tail_mass": tail_mass},
        notes=observed + [f"wrote {output}: {merged.rows} positions, the top {top_k} of {vocab} tokens, "
                          f"{size:,} bytes ({full_bytes / size:,.1f}× smaller than float32 logits)"],
    )


def _numbered(blocks):
    start = 0
    for block in blocks:
        yield start, block, None
        start += block.shape[0]


def _description(source: Source, kind: str) -> str:
    where = source.path if source.path is not None else source.operand
    return f"{where} ({source.format}, {kind}, shape {source.shape_text}, {source.dtype})"
