"""OpenAI-style logprobs: chat and legacy completions, JSONL, the -9999 sentinel, and the tail bucket."""

from __future__ import annotations

import json
import math

import pytest


def chat(tokens):
    """A chat completion shaped like the API's: tokens is [(token, logprob, {alt: logprob})]."""
    content = [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                "top_logprobs": [{"token": a, "logprob": v, "bytes": list(a.encode())} for a, v in top.items()]}
               for t, lp, top in tokens]
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(t for t, _, _ in tokens)},
                         "logprobs": {"content": content, "refusal": None}, "finish_reason": "stop"}]}


def legacy(tokens):
    return {"object": "text_completion", "choices": [{"index": 0, "text": "", "logprobs": {
        "tokens": [t for t, _, _ in tokens], "token_logprobs": [lp for _, lp, _ in tokens],
        "top_logprobs": [top for _, _, top in tokens], "text_offset": list(range(len(tokens)))}}]}


L = math.log
BASE = [("Hello", L(0.6), {"Hello": L(0.6), "Hi": L(0.3), "Hey": L(0.05)}),
        (" world", L(0.5), {" world": L(0.5), " there": L(0.4), "!": -9999.0})]
TEST = [("Hello", L(0.5), {"Hello": L(0.5), "Hi": L(0.25), "Yo": L(0.2)}),
        (" there", L(0.45), {" there": L(0.45), " world": L(0.45)})]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(chat(BASE)))
    (tmp_path / "test.json").write_text(json.dumps(legacy(TEST)))
    (tmp_path / "test.jsonl").write_text(json.dumps(chat(TEST[:1])) + "\n" + json.dumps(chat(TEST[1:])) + "\n")
    return tmp_path


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_kl_with_the_tail_bucket_by_hand(cli, files):
    # Position 0 shares Hello, Hi: P = (0.6, 0.3, tail 0.1), Q = (0.5, 0.25, tail 0.25).
    # Position 1 shares " world", " there" (P's "!" is the -9999 sentinel: absent): P = (0.5, 0.4, 0.1),
    # Q = (0.45, 0.45, 0.1).
    expected = [_kl([0.6, 0.3, 0.1], [0.5, 0.25, 0.25]), _kl([0.5, 0.4, 0.1], [0.45, 0.45, 0.1])]
    for other in ("test.json", "test.jsonl"):
        doc = cli("kl", files / "base.json", files / other, "--json", "--per-row").json()
        assert doc["per_row"]["kl"] == pytest.approx(expected, rel=1e-12)
        assert doc["sampled_token_mismatches"] == 1 and doc["tail"] == "bucket"


def test_renormalized_tail(cli, files):
    doc = cli("kl", files / "base.json", files / "test.json", "--tail", "renormalize", "--json", "--per-row").json()
    expected = [_kl([2 / 3, 1 / 3], [2 / 3, 1 / 3]), _kl([5 / 9, 4 / 9], [0.5, 0.5])]
    assert doc["per_row"]["kl"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_js_and_compare_on_logprobs(cli, files):
    js = cli("js", files / "base.json", files / "test.json", "--json").json()
    assert js["sampled_token_mismatches"] == 1 and 0 < js["value"] < math.log(2)
    report = cli("compare", files / "base.json", files / "test.json", "--check", "sampled_token_mismatches<=1",
                 "--json")
    assert report.code == 0 and report.json()["rows"] == 2
    gated = cli("compare", files / "base.json", files / "test.json", "--check", "sampled_token_mismatches==0", "-q")
    assert gated.code == 1


def test_perplexity_reads_sampled_tokens(cli, files):
    doc = cli("perplexity", files / "base.json", "--json").json()
    assert doc["tokens"] == 2
    assert doc["value"] == pytest.approx(math.exp(-(L(0.6) + L(0.5)) / 2), rel=1e-12)
    lines = cli("perplexity", files / "test.jsonl", "--json", "--per-row").json()
    assert lines["sequences"] == 2 and lines["per_row"]["tokens"] == [1, 1]


@pytest.mark.parametrize(("document", "message"), [
    ({"choices": [{"logprobs": {"content": [{"token": "a"}]}}]}, "needs the keys 'token' and 'logprob'"),
    ({"choices": [{"text": "a"}]}, "has no 'logprobs' (request them with logprobs=true and top_logprobs=K)"),
    ({"choices": [{"logprobs": {"tokens": ["a"]}}]}, "legacy logprobs need 'tokens' and 'token_logprobs'"),
    ({"data": []}, "expected a completion with 'choices', or a list of token items"),
])
def test_missing_keys(cli, tmp_path, document, message):
    (tmp_path / "bad.json").write_text(json.dumps(document))
    (tmp_path / "good.json").write_text(json.dumps(chat(BASE)))
    run = cli("kl", tmp_path / "bad.json", tmp_path / "good.json")
    assert run.code == 2 and message in run.err and len(run.err.splitlines()) == 1


def test_position_count_mismatch_and_mixing(cli, files):
    (files / "one.json").write_text(json.dumps(chat(BASE[:1])))
    run = cli("kl", files / "base.json", files / "one.json")
    assert run.code == 2 and "has 2 token positions but Q" in run.err
    mixed = cli("kl", files / "base.json", "0.5,0.5")
    assert mixed.err == ("klcli: error: an OpenAI-style logprobs file (.json, .jsonl) is compared only with another "
                         "one\n")


def test_the_tail_bucket_says_its_figures_are_lower_bounds_even_when_quiet(cli, files):
    bucket = cli("kl", files / "base.json", files / "test.json", "-q", "--check", "value<10")
    assert bucket.code == 0 and "klcli: note: figures are lower bounds (OpenAI logprobs, --tail bucket)" in bucket.err
    renormalized = cli("kl", files / "base.json", files / "test.json", "--tail", "renormalize", "-q")
    assert "lower bounds" not in renormalized.err
