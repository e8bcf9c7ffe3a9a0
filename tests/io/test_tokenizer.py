"""--tokenizer tokenizer.json and --vocab FILE: token ids as the text they stand for, and bad files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from klcli.io.tokenizer import read_tokenizer, read_vocab


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table as its encoder.py writes it (the reference the reader is checked against)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def byte_level(text: bytes) -> str:
    table = gpt2_bytes_to_unicode()
    return "".join(table[b] for b in text)


def write(tmp_path, document, name="tokenizer.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document, encoding="utf-8")
    return str(path)


def test_byte_level_bpe_markers_and_every_byte(tmp_path):
    words = [b" the", b"\n", b"\t\t", "é".encode(), " 日本".encode(), b"hello", b"\x00", b" "]
    singles = [bytes([b]) for b in range(256)]
    tokens = words + singles
    vocab = {byte_level(t): i for i, t in enumerate(dict.fromkeys(tokens))}
    document = {"model": {"type": "BPE", "vocab": vocab, "merges": []}, "decoder": {"type": "ByteLevel"},
                "added_tokens": [{"id": len(vocab), "content": "<|endoftext|>", "special": True}]}
    vocabulary = read_tokenizer(write(tmp_path, document))
    assert vocab[byte_level(b" the")] == 0 and byte_level(b" the") == "Ġthe" and byte_level(b"\n") == "Ċ"
    for raw, token_id in ((t, vocab[byte_level(t)]) for t in dict.fromkeys(tokens)):
        assert vocabulary.text(token_id) == raw.decode("utf-8", errors="backslashreplace"), raw
    assert vocabulary.text(len(vocab)) == "<|endoftext|>"
    assert vocabulary.text(len(vocab) + 1) is None
    assert vocabulary.text(0xE4) is not None and vocabulary.text(-1) is None


def test_byte_level_from_the_pre_tokenizer_when_there_is_no_decoder(tmp_path):
    document = {"model": {"type": "BPE", "vocab": {"Ġa": 0, "Ċ": 1}},
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}}
    vocabulary = read_tokenizer(write(tmp_path, document))
    assert (vocabulary.text(0), vocabulary.text(1)) == (" a", "\n")


def test_added_tokens_take_their_ids_and_are_shown_as_written(tmp_path):
    document = {"model": {"type": "BPE", "vocab": {"Ġa": 0, "b": 1}}, "decoder": {"type": "ByteLevel"},
                "added_tokens": [{"id": 1, "content": "<pad>"}, {"id": 7, "content": "Ġraw"}]}
    vocabulary = read_tokenizer(write(tmp_path, document))
    assert (vocabulary.text(0), vocabulary.text(1), vocabulary.text(7)) == (" a", "<pad>", "Ġraw")


def test_unigram_sentencepiece_with_byte_fallback(tmp_path):
    # Llama-2's decoder: ▁ → space, <0xNN> → the byte, then Fuse and Strip (which join a whole text only).
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    pieces = [["<unk>", 0.0], ["▁the", -1.5], ["<0x0A>", 0.0], ["ing", -3.0], ["▁▁", -4.0]]
    vocabulary = read_tokenizer(write(tmp_path, {"model": {"type": "Unigram", "vocab": pieces}, "decoder": decoder}))
    assert [vocabulary.text(i) for i in range(5)] == ["<unk>", " the", "\n", "ing", "  "]
    assert len(vocabulary) == 5


def test_metaspace_decoder(tmp_path):
    document = {"model": {"type": "Unigram", "vocab": [["▁x", -1.0], ["y", -2.0]]},
                "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}}
    vocabulary = read_tokenizer(write(tmp_path, document))
    assert (vocabulary.text(0), vocabulary.text(1)) == (" x", "y")


def test_wordpiece_tokens_as_written(tmp_path):
    document = {"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "the": 1, "##ing": 2}, "unk_token": "[UNK]"},
                "decoder": {"type": "WordPiece", "prefix": "##"},
                "added_tokens": [{"id": 0, "content": "[PAD]"}]}
    vocabulary = read_tokenizer(write(tmp_path, document))
    assert [vocabulary.text(i) for i in range(3)] == ["[PAD]", "the", "##ing"]


def test_vocab_file_one_token_per_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("a\n the\n日本\n\n".encode())
    vocabulary = read_vocab(str(path))
    assert [vocabulary.text(i) for i in range(4)] == ["a", " the", "日本", ""] and vocabulary.text(4) is None
    path.write_bytes(b"a\r\nb\r\n")
    assert [read_vocab(str(path)).text(i) for i in range(2)] == ["a", "b"]


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.normal(0, 2, size=(12, 6))
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "test.npy", base + rng.normal(0, 1, size=base.shape))
    return tmp_path


BAD = [
    ("missing", None, "no such file"),
    ("not json", "{nope", "is not JSON (Expecting property name enclosed in double quotes at line 1)"),
    ("a list", [1, 2], "holds a JSON list, not a tokenizer.json object"),
    ("no model", {"decoder": {}}, "has no model.vocab; is it a Hugging Face tokenizer.json?"),
    ("vocab a number", {"model": {"vocab": 3}}, "model.vocab must be an object {token: id} or a list of "
                                                "[piece, score]"),
    ("negative id", {"model": {"vocab": {"a": -1}}}, "model.vocab['a']: a token id must be a non-negative "
                                                    "integer, got -1"),
    ("duplicate id", {"model": {"vocab": {"a": 0, "b": 0}}}, "model.vocab gives id 0 to both 'a' and 'b'"),
    ("empty", {"model": {"vocab": {}}}, "model.vocab is empty"),
    ("bad unigram", {"model": {"vocab": [["a", 0.0], 5]}}, "model.vocab[1] must be [piece, score], got 5"),
    ("bad added", {"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": 1}]},
     "added_tokens[0] needs an 'id' and a 'content' string"),
    ("deep", "[" * 100000 + "]" * 100000, "its JSON is nested too deeply"),
]


@pytest.mark.parametrize("name, document, message", BAD, ids=[b[0] for b in BAD])
def test_bad_tokenizer_files_are_input_errors(cli, pair, name, document, message):
    path = str(pair / "tokenizer.json") if document is None else write(pair, document)
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--tokenizer", path)
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"klcli: error: --tokenizer {path}: ") and run.err.endswith("\n")
    assert message in run.err, run.err
    assert run.err.count("\n") == 1


def test_not_utf8_too_big_and_both_options(cli, pair, monkeypatch):
    path = pair / "tokenizer.json"
    path.write_bytes(b'{"model": {"vocab": {"\xff": 0}}}')
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--tokenizer", path)
    assert (run.code, run.err) == (2, f"klcli: error: --tokenizer {path}: is not UTF-8 text (byte 22)\n")
    vocab = pair / "vocab.txt"
    vocab.write_text("a\nb\n")
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--tokenizer", path, "--vocab", vocab)
    assert (run.code, run.err) == (2, "klcli: error: give --tokenizer or --vocab, not both: each names the "
                                      "tokens' text\n")
    monkeypatch.setenv("KLCLI_MAX_TOKENIZER_BYTES", "3")
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--vocab", vocab)
    assert run.code == 2 and run.err.startswith(f"klcli: error: --vocab {vocab}: is 0 MiB, more than the 0 MiB")
    assert "(KLCLI_MAX_TOKENIZER_BYTES)" in run.err
    empty = pair / "empty.txt"
    empty.write_text("")
    monkeypatch.delenv("KLCLI_MAX_TOKENIZER_BYTES")
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--vocab", empty)
    assert (run.code, run.err) == (2, f"klcli: error: --vocab {empty}: holds no tokens; give one token per line, "
                                      "line n for id n\n")
    run = cli("compare", pair / "base.npy", pair / "test.npy", "--vocab", pair)
    assert (run.code, run.err) == (2, f"klcli: error: --vocab {pair}: is a directory; name the file\n")
