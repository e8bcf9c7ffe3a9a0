"""compare's worst positions with their tokens as text (``--tokenizer`` / ``--vocab``)."""

from __future__ import annotations

from dataclasses import replace

from klcli.io.tokenizer import Vocabulary
from klcli.result import Result

# Each id a worst entry may hold, and the key its text goes under.
TEXT_KEYS = (("base_top1", "base_top1_text"), ("test_top1", "test_top1_text"), ("label", "label_text"))


def _named(entries: list, vocabulary: Vocabulary, missing: set[int]) -> list:
    named = []
    for entry in entries:
        entry = dict(entry)
        for id_key, text_key in TEXT_KEYS:
            if id_key in entry and entry[id_key] is not None:
                entry[text_key] = vocabulary.text(entry[id_key])
                if entry[text_key] is None:
                    missing.add(entry[id_key])
        named.append(entry)
    return named


def with_token_text(result: Result, vocabulary: Vocabulary) -> Result:
    """``result`` with ``*_text`` beside each token id of its ``worst`` entries (each candidate's too).

    An id the vocabulary does not hold gets null text, and a note says which.
    """
    figures, missing = dict(result.figures), set[int]()
    if isinstance(figures.get("worst"), list):
        figures["worst"] = _named(figures["worst"], vocabulary, missing)
    if isinstance(figures.get("tests"), list):
        figures["tests"] = [{**test, "worst": _named(test["worst"], vocabulary, missing)}
                            if isinstance(test, dict) and isinstance(test.get("worst"), list) else test
                            for test in figures["tests"]]
    notes = list(result.notes)
    if missing:
        ids = sorted(missing)
        listed = ", ".join(map(str, ids[:5])) + (", …" if len(ids) > 5 else "")
        notes.append(f"token ids {listed} are not in {vocabulary.name} ({len(vocabulary)} tokens); their text is "
                     "null")
    return replace(result, figures=figures, notes=notes)
