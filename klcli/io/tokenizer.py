"""Token ids as text: a Hugging Face ``tokenizer.json`` (``--tokenizer``) or a list of tokens (``--vocab``).

Read with the json module, no tokenizer library: the model's vocabulary
(``model.vocab``: ``{token: id}`` for BPE, WordPiece and WordLevel, a list of
``[piece, score]`` for Unigram, whose ids are the list positions) and the
``added_tokens`` (special tokens; they take precedence for their ids). Each
token is shown as the characters it stands for, as the tokenizer's decoder says:

- byte-level BPE (GPT-2, Llama 3, Qwen: decoder ``ByteLevel``): each character
  is one byte in GPT-2's ``bytes_to_unicode`` alphabet (``Ġ`` is a space, ``Ċ``
  a newline); the bytes are UTF-8 text, and bytes that are not whole UTF-8 (a
  piece of a multi-byte character) are written ``\\xNN``;
- SentencePiece (``Metaspace``, or ``Replace`` of ``▁`` by a space): ``▁`` is
  a space; with ``ByteFallback``, ``<0x0A>`` is the byte 0x0A;
- WordPiece and others: the token as written (``##ing`` stays ``##ing``).

Added tokens are shown as written. ``--vocab FILE`` is UTF-8 text with one
token per line, line n (from 0) the token of id n, shown as written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from klcli.errors import InputError
from klcli.io.source import env_bytes, parse_json


def _as_written(token: str) -> str:
    return token


@dataclass(frozen=True)
class Vocabulary:
    """Token ids → their tokens as stored, and how a token becomes text; ``name`` is the file (for notes).

    Tokens are turned into text when asked (a report shows a few dozen of a
    vocabulary's 150,000); ``added`` ids (special tokens) are shown as written.
    """

    name: str
    tokens: dict[int, str]
    show: Callable[[str], str] = _as_written
    added: frozenset[int] = field(default_factory=frozenset)

    def text(self, token_id) -> str | None:
        """The text of ``token_id``, or None for an id the vocabulary does not hold."""
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id not in self.tokens:
            return None
        token = self.tokens[token_id]
        return token if token_id in self.added else self.show(token)

    def __len__(self) -> int:
        return len(self.tokens)


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet (``bytes_to_unicode`` in its encoder.py), as character → byte.

    The printable bytes stand for themselves; the other 68 (controls, space,
    DEL, NBSP, soft hyphen) are moved to 256, 257, … in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = dict(zip(printable, printable))
    moved = 0
    for byte in range(256):
        if byte not in codes:
            codes[byte] = 256 + moved
            moved += 1
    return {chr(code): byte for byte, code in codes.items()}


BYTE_OF = _bytes_to_unicode()


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def byte_level_text(token: str) -> str:
    """A byte-level BPE token as text (``Ġthe`` → `` the``); a token outside the alphabet is kept as is.

    Examples
    --------
    >>> byte_level_text("Ġthe"), byte_level_text("Ċ"), byte_level_text("Ã©")
    (' the', '\\n', 'é')
    >>> byte_level_text("ä¸")  # the first two bytes of a three-byte character
    '\\\\xe4\\\\xb8'
    """
    if not all(char in BYTE_OF for char in token):
        return token
    return _utf8(bytes(BYTE_OF[char] for char in token))


def _byte_fallback(token: str) -> str | None:
    """``<0x0A>`` → the byte 0x0A as text (SentencePiece's byte fallback), else None."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return _utf8(bytes([int(token[3:5], 16)]))
        except ValueError:
            return None
    return None


def _steps(decoder) -> list[dict]:
    """The decoder's steps, a Sequence flattened."""
    if not isinstance(decoder, dict):
        return []
    if decoder.get("type") == "Sequence" and isinstance(decoder.get("decoders"), list):
        return [step for item in decoder["decoders"] for step in _steps(item)]
    return [decoder]


def _shower(document: dict):
    """How this tokenizer's vocabulary tokens become text, from its decoder (and pre-tokenizer)."""
    steps = _steps(document.get("decoder"))
    kinds = {step.get("type") for step in steps}
    pre = {step.get("type") for step in _pre_steps(document.get("pre_tokenizer"))}
    if "ByteLevel" in kinds or (not steps and "ByteLevel" in pre):  # no decoder: the pre-tokenizer tells
        return byte_level_text
    spaces = []
    for step in steps:
        if step.get("type") == "Metaspace":
            spaces.append(str(step.get("replacement", "▁")))
        elif step.get("type") == "Replace" and isinstance(step.get("pattern"), dict):
            if step["pattern"].get("String") and step.get("content") == " ":
                spaces.append(str(step["pattern"]["String"]))
    fallback = "ByteFallback" in kinds

    def show(token: str) -> str:
        if fallback and (byte := _byte_fallback(token)) is not None:
            return byte
        for marker in spaces:
            token = token.replace(marker, " ")
        return token

    return show


def _pre_steps(pre) -> list[dict]:
    if isinstance(pre, dict) and pre.get("type") == "Sequence" and isinstance(pre.get("pretokenizers"), list):
        return [step for item in pre["pretokenizers"] for step in _pre_steps(item)]
    return [pre] if isinstance(pre, dict) else []


def _read_text(path: str, option: str) -> str:
    limit = env_bytes("KLCLI_MAX_TOKENIZER_BYTES")
    try:
        size = os.stat(path).st_size
        if size > limit:
            raise InputError(f"{option} {path}: is {size / 2**20:,.0f} MiB, more than the {limit / 2**20:,.0f} MiB "
                             "a tokenizer file may be (KLCLI_MAX_TOKENIZER_BYTES)")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{option} {path}: is a directory; name the file") from None
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{option} {path}: is not UTF-8 text (byte {exc.start})") from None


def _token_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: a token id must be a non-negative integer, got {value!r}")
    return value


def _model_vocab(model, where: str) -> dict[int, str]:
    if not isinstance(model, dict) or "vocab" not in model:
        raise InputError(f"{where}: has no model.vocab; is it a Hugging Face tokenizer.json?")
    vocab, texts = model["vocab"], dict[int, str]()
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: {token: id}
        for token, token_id in vocab.items():
            token_id = _token_id(token_id, f"{where}: model.vocab[{token!r}]")
            if token_id in texts:
                raise InputError(f"{where}: model.vocab gives id {token_id} to both {texts[token_id]!r} and "
                                 f"{token!r}")
            texts[token_id] = token
    elif isinstance(vocab, list):  # Unigram: [[piece, score], …], the id is the position
        for token_id, entry in enumerate(vocab):
            if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
                raise InputError(f"{where}: model.vocab[{token_id}] must be [piece, score], got {entry!r:.60}")
            texts[token_id] = entry[0]
    else:
        raise InputError(f"{where}: model.vocab must be an object {{token: id}} or a list of [piece, score]")
    if not texts:
        raise InputError(f"{where}: model.vocab is empty")
    return texts


def read_tokenizer(path: str) -> Vocabulary:
    """The vocabulary of a Hugging Face ``tokenizer.json``, each token as the text it stands for."""
    where = f"--tokenizer {path}"
    text = _read_text(path, "--tokenizer")
    try:
        document = parse_json(text, where)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: is not JSON ({exc.msg} at line {exc.lineno}); give a tokenizer.json") from None
    if not isinstance(document, dict):
        raise InputError(f"{where}: holds a JSON {type(document).__name__}, not a tokenizer.json object")
    tokens = _model_vocab(document.get("model"), where)
    added = document.get("added_tokens") or []
    if not isinstance(added, list):
        raise InputError(f"{where}: added_tokens must be a list")
    special = set()
    for index, entry in enumerate(added):
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or "id" not in entry:
            raise InputError(f"{where}: added_tokens[{index}] needs an 'id' and a 'content' string")
        token_id = _token_id(entry["id"], f"{where}: added_tokens[{index}].id")
        tokens[token_id] = entry["content"]
        special.add(token_id)
    return Vocabulary(path, tokens, _shower(document), frozenset(special))


def read_vocab(path: str) -> Vocabulary:
    """One token per line (UTF-8), line n the token of id n; a CRLF file's carriage returns are not tokens'."""
    text = _read_text(path, "--vocab")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line
    if lines and all(line.endswith("\r") for line in lines):
        lines = [line[:-1] for line in lines]
    if not lines:
        raise InputError(f"--vocab {path}: holds no tokens; give one token per line, line n for id n")
    return Vocabulary(path, dict(enumerate(lines)))  # shown as written


def read_vocabulary(tokenizer: str | None, vocab: str | None) -> Vocabulary | None:
    """The vocabulary ``--tokenizer`` or ``--vocab`` names (the planner allows one of them), or None."""
    if tokenizer is not None:
        return read_tokenizer(tokenizer)
    if vocab is not None:
        return read_vocab(vocab)
    return None


def token_shown(text: str) -> str:
    """A token's text for a table or report: in double quotes, control and invisible characters escaped.

    Quotes make leading and trailing spaces visible; newlines, ESC and the
    other non-printable characters are written as Python escapes (through
    :func:`klcli.errors.shown`), so a token cannot move the cursor or forge a line.

    Examples
    --------
    >>> print(token_shown(" the"), token_shown("\\n"), token_shown("\\x1b[31m"))
    " the" "\\n" "\\x1b[31m"
    """
    from klcli.errors import shown

    return f'"{shown(text)}"'
