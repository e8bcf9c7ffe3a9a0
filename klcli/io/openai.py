"""OpenAI-style token log-probabilities (OpenAI, vLLM, llama-server): JSON or JSONL.

Accepted shapes, each position a sampled token with its log-probability and
the top-k alternatives:

- chat completions: ``choices[].logprobs.content[]`` items with ``token``,
  ``logprob`` and ``top_logprobs`` [{token, logprob}];
- legacy completions: ``choices[].logprobs`` with ``tokens``,
  ``token_logprobs`` and ``top_logprobs`` [{token: logprob}];
- a bare JSON list of chat content items;
- JSONL: one such document per line.

Each choice (or bare list) is one sequence. A log-probability of −9999 is
OpenAI's "not in the top 20" and counts as absent.

Two files are compared position by position (aligned by index, tokens matched
by string) as sparse distributions: the tokens both list, and one tail bucket
holding the rest of each side's mass (``--tail bucket``); or only the shared
tokens, renormalised on each side (``--tail renormalize``). Merging tokens into
a bucket can only lower a divergence (the data-processing inequality), so
``bucket`` is a lower bound on the divergence between the full distributions;
``renormalize`` compares the distributions conditioned on the shared tokens.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from klcli.errors import InputError, ShapeError
from klcli.io.source import Source, parse_json

EXTENSIONS = (".json", ".jsonl")
ABSENT = -9999.0  # OpenAI's sentinel for "not among the top 20"
TAILS = ("bucket", "renormalize")


def is_logprobs_json(operand) -> bool:
    """Whether an operand names an OpenAI-style logprobs file (by its extension)."""
    path = operand if isinstance(operand, str) and os.path.exists(operand) else None
    return path is not None and os.path.splitext(path)[1].lower() in EXTENSIONS


@dataclass
class Position:
    token: str
    logprob: float | None
    top: dict[str, float] = field(default_factory=dict)

    def known(self) -> dict[str, float]:
        """Every token whose log-probability the file gives at this position."""
        known = dict(self.top)
        if self.logprob is not None:
            known.setdefault(self.token, self.logprob)
        return known


def _number(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"{where}: a log-probability must be a number, got {value!r}")
    return None if value <= ABSENT else float(value)


def _chat_items(items, where: str) -> list[Position]:
    if not isinstance(items, list):
        raise InputError(f"{where}: expected a list of token items")
    positions = []
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if not isinstance(item, dict) or "token" not in item or "logprob" not in item:
            raise InputError(f"{at}: a token item needs the keys 'token' and 'logprob'")
        top = {}
        if not isinstance(item.get("top_logprobs") or [], list):
            raise InputError(f"{at}.top_logprobs: must be a list of {{token, logprob}} objects")
        for alternative in item.get("top_logprobs") or []:
            if not isinstance(alternative, dict) or "token" not in alternative or "logprob" not in alternative:
                raise InputError(f"{at}.top_logprobs: each entry needs 'token' and 'logprob'")
            value = _number(alternative["logprob"], f"{at}.top_logprobs")
            if value is not None:
                top[str(alternative["token"])] = value
        positions.append(Position(str(item["token"]), _number(item["logprob"], at), top))
    return positions


def _legacy(logprobs: dict, where: str) -> list[Position]:
    try:
        tokens, values = logprobs["tokens"], logprobs["token_logprobs"]
    except KeyError as missing:
        raise InputError(f"{where}: legacy logprobs need 'tokens' and 'token_logprobs' (missing {missing})") from None
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise InputError(f"{where}: legacy logprobs need lists 'tokens' and 'token_logprobs', got "
                         f"{type(tokens).__name__} and {type(values).__name__}")
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    if not isinstance(tops, list):
        raise InputError(f"{where}: legacy 'top_logprobs' must be a list (one object per token), "
                         f"got {type(tops).__name__}")
    if not (len(tokens) == len(values) == len(tops)):
        raise InputError(f"{where}: 'tokens', 'token_logprobs' and 'top_logprobs' have different lengths")
    positions = []
    for index, (token, value, top) in enumerate(zip(tokens, values, tops)):
        at = f"{where}.tokens[{index}]"
        if top is not None and not isinstance(top, dict):
            raise InputError(f"{at}: legacy top_logprobs entries are objects {{token: logprob}}")
        alternatives = {}
        for alternative, logprob in (top or {}).items():
            if (number := _number(logprob, at)) is not None:
                alternatives[str(alternative)] = number
        positions.append(Position(str(token), _number(value, at), alternatives))
    return positions


def _sequences(document, where: str) -> list[list[Position]]:
    if isinstance(document, list):
        return [_chat_items(document, where)]
    if not isinstance(document, dict) or not isinstance(document.get("choices"), list):
        raise InputError(f"{where}: expected a completion with 'choices', or a list of token items")
    sequences = []
    for index, choice in enumerate(document["choices"]):
        at = f"{where}.choices[{index}]"
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        if not isinstance(logprobs, dict):
            raise InputError(f"{at}: has no 'logprobs' (request them with logprobs=true and top_logprobs=K)")
        if "content" in logprobs:
            sequences.append(_chat_items(logprobs["content"], f"{at}.logprobs.content"))
        else:
            sequences.append(_legacy(logprobs, f"{at}.logprobs"))
    return sequences


def read_sequences(path: str) -> list[list[Position]]:
    """Every sequence of positions in a JSON document or a JSONL stream."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise InputError(f"{path}: is not UTF-8 JSON text") from None
    try:
        documents = [parse_json(text, path)]
    except json.JSONDecodeError:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    documents.append(parse_json(line, f"{path}: line {number}"))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}: line {number} is not JSON ({exc.msg}); expected a JSON document "
                                     "or one JSON object per line") from None
    sequences = [s for i, d in enumerate(documents) for s in _sequences(d, f"{path}" + (f":{i + 1}" if i else ""))]
    if not any(sequences):
        raise InputError(f"{path}: holds no token positions")
    return sequences


def open_sampled_logprobs(path: str, operand: str) -> Source:
    """The sampled tokens' log-probabilities as rows (one per sequence), padded with NaN: for perplexity."""
    sequences = read_sequences(path)
    width = max(len(s) for s in sequences)
    values = np.full((len(sequences), width), np.nan)
    for row, sequence in enumerate(sequences):
        for column, position in enumerate(sequence):
            if position.logprob is None:
                raise InputError(f"{path}: sequence {row}, position {column} has no log-probability for its "
                                 f"sampled token {position.token!r}")
            values[row, column] = position.logprob
    source = Source(operand, path, "openai-logprobs", values.shape, "float64", lambda _rows: iter([values]))
    source.forced_kind = "logprobs"
    return source


def _distribution(known: dict[str, float], shared: list[str], tail: str, where: str) -> list[float]:
    probabilities = [math.exp(known[token]) for token in shared]
    listed = sum(probabilities)
    if tail == "bucket" and listed <= 1.0:
        return probabilities + [1.0 - listed]
    # (Listed mass above 1 is rounding in the file: the shared tokens are then all there is.)
    if listed <= 0:
        raise InputError(f"{where}: the two files share no token here", hint="--tail renormalize needs at least one",
                         api_hint="tail='renormalize' needs at least one")
    return [p / listed for p in probabilities] + [0.0]


def aligned_pair(p_path: str, q_path: str, p_operand: str, q_operand: str, tail: str = "bucket"):
    """Two files' positions as dense probability rows over (shared tokens…, tail), zero-padded.

    Returns the two sources and the number of positions whose sampled tokens differ.
    """
    p_positions = [pos for sequence in read_sequences(p_path) for pos in sequence]
    q_positions = [pos for sequence in read_sequences(q_path) for pos in sequence]
    if len(p_positions) != len(q_positions):
        raise ShapeError(f"P ({p_path}) has {len(p_positions)} token positions but Q ({q_path}) has "
                         f"{len(q_positions)}; the files must cover the same positions")
    rows_p, rows_q, mismatches = [], [], 0
    for index, (p, q) in enumerate(zip(p_positions, q_positions)):
        mismatches += p.token != q.token
        p_known, q_known = p.known(), q.known()
        shared = [token for token in p_known if token in q_known]
        rows_p.append(_distribution(p_known, shared, tail, f"P ({p_path}) position {index}"))
        rows_q.append(_distribution(q_known, shared, tail, f"Q ({q_path}) position {index}"))
    width = max(len(row) for row in rows_p)
    dense_p, dense_q = np.zeros((len(rows_p), width)), np.zeros((len(rows_q), width))
    for row, (values_p, values_q) in enumerate(zip(rows_p, rows_q)):
        # Shared tokens first, the tail last; padding is zero on both sides and adds nothing.
        dense_p[row, : len(values_p) - 1], dense_p[row, -1] = values_p[:-1], values_p[-1]
        dense_q[row, : len(values_q) - 1], dense_q[row, -1] = values_q[:-1], values_q[-1]
    sources = []
    for operand, path, dense in ((p_operand, p_path, dense_p), (q_operand, q_path, dense_q)):
        source = Source(operand, path, "openai-logprobs", dense.shape, "float64", _whole(dense))
        source.forced_kind = "probs"
        sources.append(source)
    return sources[0], sources[1], mismatches


def _whole(rows: np.ndarray) -> Callable[[int], Iterator[np.ndarray]]:
    """A reader of ``rows`` as one block."""
    return lambda _block_rows: iter([rows])
