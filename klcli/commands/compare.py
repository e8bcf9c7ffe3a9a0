"""``compare``: a drift report between two models' outputs at the same positions, for CI gates."""

from __future__ import annotations

import math

import numpy as np

from klcli.commands.common import Reading, describe_inputs, open_operands, open_pair
from klcli.core.compare import agreement_stderr, label_stats, paired_difference, position_stats
from klcli.core.perplexity import as_token_ids
from klcli.core.stats import summarize
from klcli.core.stream import Rows, available_cores, ordered_map, paired_blocks, threads_note
from klcli.errors import ShapeError
from klcli.io.source import Source, rows_per_block
from klcli.result import Result
from klcli.units import Unit

# Per-position figures in nats, reported in the chosen unit.
_DIVERGENCES = ("kl", "kl_reverse", "js")


def _check_shapes(base: Source, test: Source) -> None:
    known = None not in base.shape and None not in test.shape
    if known and (base.shape[-1] != test.shape[-1] or math.prod(base.shape[:-1]) != math.prod(test.shape[:-1])):
        raise ShapeError(f"{base.label} has shape {base.shape_text} but {test.label} has shape {test.shape_text}; "
                         "compare needs the same positions and vocabulary")


def _label_stream(labels: Source):
    position = 0
    for block in labels.blocks(rows_per_block(1)):
        ids = as_token_ids(block, label=labels.label, first_position=position)
        position += ids.size
        yield ids.reshape(-1, 1)


def compare(base_operand: str, test_operand: str, reading: Reading, unit: Unit, *, labels: str | None = None,
            top_k: int = 5, worst: int = 10, ignore_index: int = -100, progress=None, tail: str = "bucket") -> Result:
    base, test, extras = open_pair(base_operand, test_operand, ("BASE", "TEST"), tail)
    sources = [base, test] + (open_operands((labels, "labels")) if labels else [])
    _check_shapes(base, test)
    if labels is None and base.labels is not None:  # a llama.cpp base file carries its tokens
        sources.append(Source(base.operand, base.path, base.format, base.shape[:-1], "int32", base.labels,
                              role="labels"))
        labels = base.operand
    label_rows = Rows(_label_stream(sources[2])) if labels else None
    pieces: dict[str, list[np.ndarray]] = {}
    rows = 0
    pairs = paired_blocks(base.blocks(rows_per_block(base.outcomes or 1)),
                          test.blocks(rows_per_block(test.outcomes or 1)),
                          block_rows=rows_per_block, p_label=base.label, q_label=test.label, broadcast=False)
    def items():
        for start, base_block, test_block in pairs:
            ids = _take_labels(label_rows, sources[2], start, base_block.shape, ignore_index) if labels else None
            yield start, base_block, test_block, ids

    def work(item):
        start, base_block, test_block, ids = item
        base_rows = reading.log_rows(base_block, reading.p_kind, base, start)
        test_rows = reading.log_rows(test_block, reading.q_kind, test, start)
        figures = position_stats(base_rows, test_rows, top_k)
        if ids is not None:
            figures.update(_label_figures(base_rows, test_rows, ids, ignore_index))
        return base_block.shape[0], figures

    for count, figures in ordered_map(work, items(), reading.threads or available_cores()):
        for name, values in figures.items():
            pieces.setdefault(name, []).append(values)
        rows += count
        if progress is not None:
            progress.update(rows)
    if label_rows is not None and (total := label_rows.drain()) != rows:
        raise ShapeError(f"{sources[2].label} hold {total} labels but the logits have {rows} positions; "
                         "give one label per position")
    stats = {name: np.concatenate(parts) for name, parts in pieces.items()}
    vocab = base.outcomes or test.outcomes
    result = _report(stats, rows, vocab, top_k, worst, unit,
                     describe_inputs(sources, [reading.p_kind, reading.q_kind] + (["labels"] if labels else []),
                                     [rows] * len(sources)))
    result.figures.update(extras)
    result.notes += threads_note(reading.threads)
    return result


def _take_labels(label_rows: Rows, labels: Source, start: int, shape: tuple, ignore_index: int) -> np.ndarray:
    """The next block's labels, checked against the vocabulary."""
    count, vocab = shape
    ids = label_rows.take(count)
    if ids is None or ids.shape[0] != count:
        have = label_rows.drain()
        raise ShapeError(f"{labels.label} hold {have} labels but the logits have more than {have} positions; "
                         "give one label per position")
    ids = ids[:, 0]
    outside = (ids != ignore_index) & ((ids < 0) | (ids >= vocab))
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise ShapeError(f"{labels.label}: the label at position {start + at} is {int(ids[at])}, outside the "
                         f"vocabulary [0, {vocab})")
    return ids


def _label_figures(base_rows, test_rows, ids: np.ndarray, ignore_index: int) -> dict[str, np.ndarray]:
    counted = ids != ignore_index
    figures = label_stats(base_rows, test_rows, np.where(counted, ids, 0))
    for name in figures:  # ignored positions have no label figures
        figures[name] = np.where(counted, figures[name], np.nan)
    return {"label": ids, "counted": counted, **figures}


def _report(stats, rows, vocab, top_k, worst, unit: Unit, inputs) -> Result:
    scaled = {name: unit.from_nats(stats[name]) for name in _DIVERGENCES}
    kl = summarize(scaled["kl"])
    agree = stats["base_top1"] == stats["test_top1"]
    agreement = float(np.mean(agree))
    metrics = {
        "kl": kl,
        "kl_reverse": summarize(scaled["kl_reverse"]),
        "js": summarize(scaled["js"]),
        "tv": summarize(stats["tv"]),
    }
    figures = {
        "vocab": vocab,
        "top1_agreement": agreement,
        "top1_agreement_stderr": agreement_stderr(agreement, rows),
        "top_k": top_k,
        "topk_overlap": float(np.mean(stats["topk_overlap"])),
    }
    per_row = {"kl": scaled["kl"], "kl_reverse": scaled["kl_reverse"], "js": scaled["js"], "tv": stats["tv"],
               "top1_agree": agree, "topk_overlap": stats["topk_overlap"]}
    if "label" in stats:
        counted = stats["counted"]
        nll_base, nll_test = stats["nll_base"][counted], stats["nll_test"][counted]
        delta_p = stats["delta_p"][counted]
        ln_ratio, ln_ratio_stderr = paired_difference(nll_test, nll_base)
        delta = summarize(delta_p)
        delta["rms"] = float(np.sqrt(np.mean(delta_p**2)))
        figures.update({
            "tokens": int(counted.sum()),
            "ppl_base": math.exp(float(np.mean(nll_base))),
            "ppl_test": math.exp(float(np.mean(nll_test))),
            "ppl_ratio": math.exp(ln_ratio),
            "ln_ppl_ratio": ln_ratio,
            "ln_ppl_ratio_stderr": ln_ratio_stderr,
            "nll_correlation": float(np.corrcoef(nll_base, nll_test)[0, 1]) if nll_base.size > 1 else None,
        })
        metrics["delta_p"] = delta
        per_row.update({"nll_base": unit.from_nats(stats["nll_base"]), "nll_test": unit.from_nats(stats["nll_test"]),
                        "delta_p": stats["delta_p"]})
    # The worst positions: largest D(base‖test), ties by lower row (a stable sort of −kl).
    order = np.argsort(-stats["kl"], kind="stable")[:worst]
    figures["worst"] = [
        {"row": int(row), "kl": float(scaled["kl"][row]), "base_top1": int(stats["base_top1"][row]),
         "test_top1": int(stats["test_top1"][row]),
         **({"label": int(stats["label"][row])} if "label" in stats else {})}
        for row in order
    ]
    return Result(
        command="compare",
        headline="mean D(base‖test)",
        value=kl["mean"],
        unit=unit,
        rows=rows,
        inputs=inputs,
        summary=kl,
        metrics=metrics,
        figures=figures,
        per_row=per_row,
    )
