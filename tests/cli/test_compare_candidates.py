"""klcli compare with several candidates: every figure of each, against float64 references built from the arrays.

The references are written here from scipy and the formulas of llama.cpp's tools/perplexity/perplexity.cpp
(its running sums, not klcli's centred forms), never from klcli's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")

B, T, V = 3, 40, 64  # (B, T, V) logits: 120 positions


def _llama_mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """perplexity.cpp's mean_and_uncertainty: from Σx and Σx², √((Σx²/n − (Σx/n)²)/(n−1))."""
    n = values.size
    mean = values.sum() / n
    spread = (values * values).sum() / n - mean * mean
    return mean, math.sqrt(spread / (n - 1))


def _llama_covariance(a: np.ndarray, b: np.ndarray) -> float:
    """perplexity.cpp's covariance: (Σab/n − (Σa/n)(Σb/n))/(n−1)."""
    n = a.size
    return ((a * b).sum() / n - (a.sum() / n) * (b.sum() / n)) / (n - 1)


def reference(base: np.ndarray, test: np.ndarray, labels: np.ndarray | None, k: int = 5) -> dict:
    """Every figure of one candidate, in float64, from scipy and llama.cpp's formulas."""
    log_p = special.log_softmax(base.astype(np.float64), axis=1)
    log_q = special.log_softmax(test.astype(np.float64), axis=1)
    p, q = np.exp(log_p), np.exp(log_q)
    order_p = np.array([np.argsort(-row, kind="stable") for row in base])
    order_q = np.array([np.argsort(-row, kind="stable") for row in test])
    out = {
        "kl": scipy_stats.entropy(p, q, axis=1),
        "kl_reverse": scipy_stats.entropy(q, p, axis=1),
        "js": 0.5 * scipy_stats.entropy(p, 0.5 * (p + q), axis=1) + 0.5 * scipy_stats.entropy(q, 0.5 * (p + q), axis=1),
        "tv": 0.5 * np.abs(p - q).sum(axis=1),
        "agree": order_p[:, 0] == order_q[:, 0],
        "overlap": np.array([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(order_p, order_q)]),
        "base_top1": order_p[:, 0], "test_top1": order_q[:, 0],
        "confidence": p.max(axis=1),
    }
    if labels is not None:
        rows = np.arange(labels.size)
        nll_base, nll_test = -log_p[rows, labels], -log_q[rows, labels]
        out.update(nll_base=nll_base, nll_test=nll_test, p_label_base=p[rows, labels], p_label_test=q[rows, labels],
                   delta_p=q[rows, labels] - p[rows, labels])
        mean_t, unc_t = _llama_mean_and_uncertainty(nll_test)
        mean_b, unc_b = _llama_mean_and_uncertainty(nll_base)
        ppl_t, ppl_b = math.exp(mean_t), math.exp(mean_b)
        cov = _llama_covariance(nll_test, nll_base)
        out.update(ppl_test=ppl_t, ppl_test_stderr=ppl_t * unc_t, ppl_base=ppl_b, ppl_base_stderr=ppl_b * unc_b,
                   delta_ppl=ppl_t - ppl_b,
                   delta_ppl_stderr=math.sqrt((ppl_t * unc_t) ** 2 + (ppl_b * unc_b) ** 2 - 2 * ppl_t * ppl_b * cov),
                   ln_ppl_ratio=mean_t - mean_b, ln_ppl_ratio_stderr=math.sqrt(unc_t**2 + unc_b**2 - 2 * cov))
        mse, mse_unc = _llama_mean_and_uncertainty(out["delta_p"] ** 2)
        out.update(rms=math.sqrt(mse), rms_stderr=0.5 / math.sqrt(mse) * mse_unc)
        out["label_in_topk"] = {
            side: {str(j): float(np.mean([labels[i] in order[i][:j] for i in rows])) for j in (1, 5, k)}
            for side, order in (("base", order_p), ("test", order_q))}
    return out


@pytest.fixture
def candidates(tmp_path):
    """A base and three candidates of growing noise, (B, T, V) float32 logits, with labels."""
    rng = np.random.default_rng(17)
    base = rng.normal(0, 2.5, size=(B, T, V)).astype(np.float32)
    base[0, :6, 0] += 9.0  # confident positions, for the top confidence buckets
    tests = [(base + rng.normal(0, noise, size=base.shape)).astype(np.float32) for noise in (0.6, 0.1, 0.3)]
    labels = rng.integers(0, V, size=(B, T))
    np.save(tmp_path / "base.npy", base)
    for index, test in enumerate(tests):
        folder = tmp_path / f"q{index}"
        folder.mkdir()
        np.save(folder / "logits.npy", test)  # the same file name in each folder: names need their folders
    np.save(tmp_path / "labels.npy", labels)
    flat = lambda a: a.reshape(B * T, V)  # noqa: E731
    return flat(base), [flat(t) for t in tests], labels.reshape(-1), tmp_path


def _paths(folder, count):
    return [folder / f"q{index}" / "logits.npy" for index in range(count)]


def _summary_ok(summary, values, rows=None):
    assert summary["count"] == values.size
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    assert summary["stderr"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(values.size), rel=1e-9)
    for key, fraction in (("min", 0), ("p25", 25), ("median", 50), ("p75", 75), ("p99", 99), ("max", 100)):
        assert summary[key] == pytest.approx(np.percentile(values, fraction), rel=1e-9, abs=1e-15), key
    assert summary["argmax"] == int(np.argmax(values))


def _candidate_ok(entry, ref, labels, worst=10):
    for key in ("kl", "kl_reverse", "js", "tv"):
        _summary_ok(entry[key], ref[key])
    n = ref["kl"].size
    agreement = ref["agree"].mean()
    assert entry["top1_agreement"] == pytest.approx(agreement, rel=1e-12)
    assert entry["top1_agreement_stderr"] == pytest.approx(math.sqrt(agreement * (1 - agreement) / (n - 1)), rel=1e-12)
    assert entry["topk_overlap"] == pytest.approx(ref["overlap"].mean(), rel=1e-12)
    # Buckets of the base's top-1 probability, [i/10, (i+1)/10), the last closed.
    buckets = entry["by_confidence"]
    assert len(buckets) == 10 and sum(b["count"] for b in buckets) == n
    for i, bucket in enumerate(buckets):
        lo, hi = i / 10, (i + 1) / 10
        inside = (ref["confidence"] >= lo) & ((ref["confidence"] < hi) if i < 9 else (ref["confidence"] <= 1.0))
        assert (bucket["lo"], bucket["hi"], bucket["count"]) == (pytest.approx(lo), pytest.approx(hi), inside.sum())
        if inside.any():
            assert bucket["kl_mean"] == pytest.approx(ref["kl"][inside].mean(), rel=1e-9)
            assert bucket["top1_agreement"] == pytest.approx(ref["agree"][inside].mean(), rel=1e-12)
        else:
            assert bucket["kl_mean"] is None and bucket["top1_agreement"] is None
    # The worst positions, named as (sequence, position) of the (B, T, V) input.
    order = np.argsort(-ref["kl"], kind="stable")[:worst]
    assert [w["row"] for w in entry["worst"]] == order.tolist()
    for w, row in zip(entry["worst"], order):
        assert (w["sequence"], w["position"]) == (row // T, row % T)
        assert w["kl"] == pytest.approx(ref["kl"][row], rel=1e-9)
        assert (w["base_top1"], w["test_top1"]) == (ref["base_top1"][row], ref["test_top1"][row])
        if labels is None:
            assert w["label"] is None and w["p_label_base"] is None and w["p_label_test"] is None
        else:
            assert w["label"] == labels[row]
            assert w["p_label_base"] == pytest.approx(ref["p_label_base"][row], rel=1e-9)
            assert w["p_label_test"] == pytest.approx(ref["p_label_test"][row], rel=1e-9)
    if labels is None:
        assert "ppl_test" not in entry and "label_in_topk" not in entry
        return
    for key in ("ppl_test", "ppl_test_stderr", "delta_ppl", "delta_ppl_stderr", "ln_ppl_ratio",
                "ln_ppl_ratio_stderr"):
        assert entry[key] == pytest.approx(ref[key], rel=1e-9), key
    assert entry["ppl_ratio"] == pytest.approx(math.exp(ref["ln_ppl_ratio"]), rel=1e-9)
    assert entry["nll_correlation"] == pytest.approx(np.corrcoef(ref["nll_base"], ref["nll_test"])[0, 1], rel=1e-9)
    _summary_ok(entry["delta_p"], ref["delta_p"])
    assert entry["delta_p"]["rms"] == pytest.approx(ref["rms"], rel=1e-9)
    assert entry["delta_p"]["rms_stderr"] == pytest.approx(ref["rms_stderr"], rel=1e-9)
    _topk_ok(entry["label_in_topk"], ref["label_in_topk"])


def _topk_ok(found, expected):
    assert set(found) == {"base", "test"}
    for side in ("base", "test"):
        assert found[side] == pytest.approx(expected[side], rel=1e-12), side


@pytest.mark.parametrize("count", [2, 3])
def test_every_figure_of_every_candidate(cli, candidates, count):
    base, tests, labels, folder = candidates
    doc = cli("compare", folder / "base.npy", *_paths(folder, count), "--labels", folder / "labels.npy",
              "--json").json()
    assert doc["rows"] == B * T and doc["tokens"] == B * T and doc["vocab"] == V
    assert [entry["name"] for entry in doc["tests"]] == [f"q{i}/logits.npy" for i in range(count)]
    refs = [reference(base, test, labels) for test in tests[:count]]
    for entry, ref in zip(doc["tests"], refs):
        _candidate_ok(entry, ref, labels)
    first = refs[0]
    assert doc["ppl_base"] == pytest.approx(first["ppl_base"], rel=1e-9)
    assert doc["ppl_base_stderr"] == pytest.approx(first["ppl_base_stderr"], rel=1e-9)
    # The top level holds the first candidate's figures (the command line's first, not the leaderboard's top).
    assert doc["value"] == pytest.approx(first["kl"].mean(), rel=1e-9)
    for key in ("kl", "kl_reverse", "js", "tv", "delta_p", "top1_agreement", "ppl_test", "delta_ppl_stderr",
                "label_in_topk", "by_confidence", "worst"):
        assert doc[key] == doc["tests"][0][key], key
    expected = sorted(range(count), key=lambda i: refs[i]["kl"].mean())
    assert doc["ranking"] == {"key": "kl.mean", "order": "ascending",
                              "names": [f"q{i}/logits.npy" for i in expected]}
    assert [entry["role"] for entry in doc["inputs"]] == ["BASE", *[f"TEST {i + 1}" for i in range(count)], "labels"]


def test_without_labels_and_one_candidate_in_tests(cli, candidates):
    base, tests, _, folder = candidates
    doc = cli("compare", folder / "base.npy", _paths(folder, 1)[0], "--json").json()
    assert len(doc["tests"]) == 1 and doc["tests"][0]["name"] == "logits.npy"
    _candidate_ok(doc["tests"][0], reference(base, tests[0], None), None)
    assert "tokens" not in doc and "label_in_topk" not in doc
    assert doc["worst"] == doc["tests"][0]["worst"] and doc["by_confidence"] == doc["tests"][0]["by_confidence"]


def test_a_single_candidate_reports_as_in_a_group(cli, candidates):
    """Each candidate's entry is what a run of that candidate alone reports."""
    _, _, _, folder = candidates
    group = cli("compare", folder / "base.npy", *_paths(folder, 3), "--labels", folder / "labels.npy", "--json",
                "--name", "a", "--name", "b", "--name", "c").json()
    for index, entry in enumerate(group["tests"]):
        alone = cli("compare", folder / "base.npy", _paths(folder, 3)[index], "--labels", folder / "labels.npy",
                    "--json", "--name", entry["name"]).json()
        assert alone["tests"][0] == entry


def test_two_dimensional_input_has_no_sequence(cli, tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(30, 12))
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "t.npy", base + rng.normal(0, 0.4, size=base.shape))
    doc = cli("compare", tmp_path / "b.npy", tmp_path / "t.npy", "--json", "--worst", "3").json()
    assert [(w["sequence"], w["position"]) for w in doc["worst"]] == [(None, None)] * 3


def test_label_in_topk_with_a_larger_top_k_and_ignored_positions(cli, candidates):
    base, tests, labels, folder = candidates
    ignored = labels.copy()
    ignored[::4] = -100
    np.save(folder / "ignored.npy", ignored)
    doc = cli("compare", folder / "base.npy", *_paths(folder, 2), "--labels", folder / "ignored.npy", "--top-k", "8",
              "--json").json()
    kept = np.flatnonzero(ignored != -100)
    for entry, test in zip(doc["tests"], tests):
        ref = reference(base[kept], test[kept], labels[kept], k=8)
        assert set(entry["label_in_topk"]["base"]) == {"1", "5", "8"}
        _topk_ok(entry["label_in_topk"], ref["label_in_topk"])
        assert entry["topk_overlap"] == pytest.approx(ref["overlap"].mean(), rel=1e-12)
        order = np.argsort(-ref["kl"], kind="stable")[:10]
        assert [w["row"] for w in entry["worst"]] == kept[order].tolist()
        assert [(w["sequence"], w["position"]) for w in entry["worst"]] == [(r // T, r % T) for r in kept[order]]
        assert sum(b["count"] for b in entry["by_confidence"]) == kept.size


def test_llama_formulas_on_data_with_a_known_answer(cli, tmp_path):
    """Identical models: ΔPPL = 0 ± 0 (the covariance cancels both variances); a constant Δp: RMS = |Δp| ± 0."""
    rng = np.random.default_rng(5)
    base = rng.normal(0, 2, size=(50, 10))
    labels = rng.integers(0, 10, size=50)
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "shifted.npy", base + 3.0)  # the same distributions
    np.save(tmp_path / "labels.npy", labels)
    doc = cli("compare", tmp_path / "b.npy", tmp_path / "shifted.npy", "--labels", tmp_path / "labels.npy",
              "--json").json()
    assert doc["delta_ppl"] == pytest.approx(0.0, abs=1e-12) and doc["delta_ppl_stderr"] < 1e-12
    nll = -special.log_softmax(base, axis=1)[np.arange(50), labels]
    assert doc["ppl_test_stderr"] == pytest.approx(math.exp(nll.mean()) * np.std(nll, ddof=1) / math.sqrt(50),
                                                   rel=1e-9)
    # Two outcomes, p_base(label) = ½ and p_test(label) = ¾ everywhere: Δp = ¼ at every position.
    np.save(tmp_path / "half.npy", np.zeros((20, 2)))
    np.save(tmp_path / "three.npy", np.tile([math.log(3.0), 0.0], (20, 1)))
    np.save(tmp_path / "zeros.npy", np.zeros(20, dtype=np.int64))
    doc = cli("compare", tmp_path / "half.npy", tmp_path / "three.npy", "--labels", tmp_path / "zeros.npy",
              "--json").json()
    assert doc["delta_p"]["rms"] == pytest.approx(0.25, rel=1e-12) and doc["delta_p"]["rms_stderr"] == 0.0
    assert doc["ppl_base"] == pytest.approx(2.0, rel=1e-12) and doc["ppl_test"] == pytest.approx(4 / 3, rel=1e-12)
    assert doc["delta_ppl"] == pytest.approx(4 / 3 - 2, rel=1e-12) and doc["delta_ppl_stderr"] == 0.0


# --- names, sorting, checks -----------------------------------------------------------------------------------


def test_sort_keys_and_directions(cli, candidates):
    base, tests, labels, folder = candidates
    args = ["compare", folder / "base.npy", *_paths(folder, 3), "--labels", folder / "labels.npy", "--json",
            "--name", "a", "--name", "b", "--name", "c"]
    refs = [reference(base, test, labels) for test in tests]
    for key, figure, descending in (("kl.p99", lambda r: np.percentile(r["kl"], 99), False),
                                    ("kl.max", lambda r: r["kl"].max(), False),
                                    ("top1_agreement", lambda r: r["agree"].mean(), True),
                                    ("ppl_ratio", lambda r: math.exp(r["ln_ppl_ratio"]), False),
                                    ("max", lambda r: r["kl"].max(), False)):  # a bare name: kl's, as in --check
        doc = cli(*args, "--sort", key).json()
        order = sorted(range(3), key=lambda i: -figure(refs[i]) if descending else figure(refs[i]))
        assert doc["ranking"]["names"] == ["abc"[i] for i in order], key
        assert doc["ranking"]["order"] == ("descending" if descending else "ascending")
        assert [entry["name"] for entry in doc["tests"]] == ["a", "b", "c"]  # tests stay in command-line order
    unknown = cli(*args, "--sort", "kl.p42")
    assert unknown.code == 2 and unknown.err.startswith("klcli: error: --sort 'kl.p42': no such figure of a "
                                                        "candidate; available: ")
    assert "kl.{count,mean" in unknown.err and "top1_agreement" in unknown.err


def test_the_table_is_a_leaderboard(cli, candidates):
    base, tests, labels, folder = candidates
    run = cli("compare", folder / "base.npy", *_paths(folder, 3), "--labels", folder / "labels.npy",
              "--name", "noisy", "--name", "close", "--name", "middle")
    assert run.code == 0
    lines = run.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("leaderboard"))
    rows = [line.split()[0] for line in lines[start + 4:start + 7]]
    assert rows == ["close", "middle", "noisy"]  # by mean KL, ascending
    close = reference(base, tests[1], labels)
    agreement = 100 * close["agree"].mean()
    row = lines[start + 4]
    assert f"{close['kl'].mean():.4g} ± " in row and f"{agreement:.4g} ± " in row
    assert "perplexity (PPL(base) " in run.out and "worst: middle" in run.out
    assert max(len(line.rstrip()) for line in lines[start:start + 8]) <= 80


def test_check_applies_to_every_candidate(cli, candidates):
    base, tests, labels, folder = candidates
    args = ["compare", folder / "base.npy", *_paths(folder, 3), "--name", "noisy", "--name", "close", "--name",
            "middle"]
    kl = [reference(base, test, None)["kl"] for test in tests]
    between = float(kl[1].mean() + kl[2].mean()) / 2  # close passes, middle and noisy fail
    run = cli(*args, "--check", f"kl.mean<{between!r}", "--json")
    assert run.code == 1
    checks = run.json()["checks"]
    assert [(c["candidate"], c["passed"]) for c in checks] == [("noisy", False), ("close", True), ("middle", False)]
    for outcome, values in zip(checks, kl):
        assert outcome["actual"] == pytest.approx(values.mean(), rel=1e-9)
    assert "klcli: check failed: kl.mean<" in run.err and " for noisy (actual " in run.err
    assert " for middle (actual " in run.err and " for close " not in run.err
    # value and bare names are the candidate's own
    bare = cli(*args, "--check", f"value<{between!r}", "--check", "max<100", "--json").json()["checks"]
    assert [c["passed"] for c in bare] == [False, True, False, True, True, True]
    assert cli(*args, "--check", "max<100", "-q").code == 0
    unknown = cli(*args, "--check", "kl.p42<1")
    assert unknown.code == 2 and "no such figure" in unknown.err


def test_name_errors_and_default_names(cli, candidates):
    _, _, _, folder = candidates
    base, (first, second) = folder / "base.npy", _paths(folder, 2)
    few = cli("compare", base, first, second, "--name", "only")
    assert few.code == 2
    assert few.err == ("klcli: error: --name given 1 times for 2 TEST operands; give one --name per TEST, in their "
                       "order (or none)\n")
    twice = cli("compare", base, first, second, "--name", "x", "--name", "x")
    assert twice.code == 2
    assert twice.err == "klcli: error: --name 'x' is given twice; give each candidate its own name\n"
    same = cli("compare", base, first, first, "--json").json()
    assert [entry["name"] for entry in same["tests"]] == ["logits.npy", "logits.npy #2"]
    from tests.conftest import SAMPLES

    selected = cli("compare", SAMPLES / "teacher_logits.npy", f"{SAMPLES / 'models.safetensors'}:student",
                   SAMPLES / "student_logits.npy", "--json").json()
    assert [entry["name"] for entry in selected["tests"]] == ["models.safetensors:student", "student_logits.npy"]


def test_rows_mismatch_names_the_candidate(cli, candidates):
    base, tests, _, folder = candidates
    np.save(folder / "short.npy", tests[0][:-1])
    run = cli("compare", folder / "base.npy", _paths(folder, 1)[0], folder / "short.npy")
    assert run.code == 2
    assert run.err == (f"klcli: error: BASE ({folder / 'base.npy'}) has shape (3, 40, 64) but TEST 2 "
                       f"({folder / 'short.npy'}) has shape (119, 64); compare needs the same positions and "
                       "vocabulary\n")


# --- --vocab-size ----------------------------------------------------------------------------------------------


def test_vocab_size_equals_slicing_by_hand(cli, candidates):
    base, tests, labels, folder = candidates
    padded = np.concatenate([tests[0], np.full((B * T, 9), -3.0, dtype=np.float32)], axis=1)  # 9 padding logits
    np.save(folder / "padded.npy", padded)
    wide = cli("compare", folder / "base.npy", folder / "padded.npy")
    assert wide.code == 2 and wide.err.endswith(f"(for logits padded past the tokenizer's vocabulary, compare the "
                                                f"first {V} outcomes with --vocab-size {V})\n")
    trimmed = cli("compare", folder / "base.npy", folder / "padded.npy", "--vocab-size", str(V), "--labels",
                  folder / "labels.npy", "--json").json()
    _candidate_ok(trimmed["tests"][0], reference(base, padded[:, :V], labels), labels)
    assert trimmed["vocab"] == V and any("--vocab-size 64" in note for note in trimmed["notes"])
    smaller = cli("compare", folder / "base.npy", folder / "padded.npy", "--vocab-size", "40", "--json").json()
    _candidate_ok(smaller["tests"][0], reference(base[:, :40], padded[:, :40], None), None)
    too_many = cli("compare", folder / "base.npy", folder / "padded.npy", "--vocab-size", "70")
    assert too_many.code == 2
    assert too_many.err == (f"klcli: error: --vocab-size 70: BASE ({folder / 'base.npy'}) has only 64 outcomes per "
                            "row\n")
    np.save(folder / "big_label.npy", np.full(B * T, 50))
    outside = cli("compare", folder / "base.npy", folder / "padded.npy", "--vocab-size", "40", "--labels",
                  folder / "big_label.npy")
    assert outside.code == 2 and "outside the vocabulary [0, 40)" in outside.err


def test_units_scale_every_candidates_information_figures(cli, candidates):
    _, _, _, folder = candidates
    args = ["compare", folder / "base.npy", *_paths(folder, 2), "--labels", folder / "labels.npy", "--json"]
    nats, bits = cli(*args).json(), cli(*args, "--bits").json()
    for in_nats, in_bits in zip(nats["tests"], bits["tests"]):
        for key in ("kl", "kl_reverse", "js"):
            assert in_bits[key]["mean"] == pytest.approx(in_nats[key]["mean"] / math.log(2), rel=1e-12), key
        assert in_bits["worst"][0]["kl"] == pytest.approx(in_nats["worst"][0]["kl"] / math.log(2), rel=1e-12)
        for a, b in zip(in_nats["by_confidence"], in_bits["by_confidence"]):
            assert b["kl_mean"] == (None if a["kl_mean"] is None else pytest.approx(a["kl_mean"] / math.log(2)))
        for key in ("tv", "delta_p"):  # not information: never scaled
            assert in_bits[key] == in_nats[key]
        for key in ("top1_agreement", "ppl_test", "delta_ppl", "delta_ppl_stderr", "label_in_topk"):
            assert in_bits[key] == in_nats[key], key
    assert bits["value"] == bits["tests"][0]["kl"]["mean"]


def test_text_inputs_of_unknown_length_name_the_short_candidate(cli, tmp_path):
    rng = np.random.default_rng(8)
    base = rng.normal(size=(6, 4))
    np.savetxt(tmp_path / "base.csv", base, delimiter=",")
    np.savetxt(tmp_path / "a.csv", base + 0.1 * rng.normal(size=base.shape), delimiter=",")
    np.savetxt(tmp_path / "b.csv", base[:5], delimiter=",")
    run = cli("compare", tmp_path / "base.csv", tmp_path / "a.csv", tmp_path / "b.csv")
    assert run.code == 2
    assert run.err == (f"klcli: error: BASE ({tmp_path / 'base.csv'}) has 6 rows but TEST 2 ({tmp_path / 'b.csv'}) "
                       "has 5; they must have the same rows\n")


def test_logprobs_json_pairs_one_to_one(cli):
    from tests.conftest import SAMPLES

    run = cli("compare", SAMPLES / "reference.json", SAMPLES / "candidate.jsonl", SAMPLES / "candidate.jsonl")
    assert run.code == 2 and "compared with one other such file at a time" in run.err


@pytest.mark.parametrize("ascii_only", [False, True])
def test_leaderboard_cells_are_never_cut(candidates, ascii_only):
    from klcli import render
    from klcli.runner import plan

    _, _, _, folder = candidates
    result = plan("compare", str(folder / "base.npy"), *map(str, _paths(folder, 3)), labels=str(folder / "labels.npy"),
                  name=["a-rather-long-candidate-name", "b", "c"]).compute(None)
    text = render.to_table(result, per_row=False, color=False, width=40, ascii_only=ascii_only)
    text = text[text.index("\nleaderboard ("):text.index("\nsummary over")]  # (the head cuts long paths at 40 columns)
    assert "…" not in text and "..." not in text
    assert "a-rather-long-candidate-name" in text
    assert ("+/-" if ascii_only else "±") in text and (ascii_only is False or text.isascii())


def test_names_are_printed_as_given_never_read_as_markup(cli, candidates):
    _, _, _, folder = candidates
    run = cli("compare", folder / "base.npy", *_paths(folder, 2), "--name", "[red]q8", "--name", "q4\x1b]0;t\x07")
    assert run.code == 0
    assert run.out.count("[red]q8") >= 4  # leaderboard, summary, buckets, worst
    assert "\x1b" not in run.out and "\x07" not in run.out


def test_a_single_candidates_name_in_the_headline_is_not_markup(cli, candidates):
    _, _, _, folder = candidates
    run = cli("compare", folder / "base.npy", *_paths(folder, 1), "--name", "[/bold]x")
    assert run.code == 0, run.err  # a closing tag once raised rich's MarkupError (an internal error)
    run = cli("compare", folder / "base.npy", *_paths(folder, 2), "--name", "[/bold]x", "--name", "y")
    assert run.code == 0 and "mean D(base‖[/bold]x)" in run.out, run.err


def test_scoring_a_block_in_pieces_changes_no_figure(cli, candidates, monkeypatch):
    """Rows are independent: pieces of 3 rows (some wholly left out) give every figure bit for bit."""
    from klcli.commands import compare

    base, tests, labels, folder = candidates
    ignored = labels.copy()
    ignored[5:17] = -100  # whole pieces left out, and pieces partly left out
    np.save(folder / "ignored.npy", ignored)
    args = ["compare", folder / "base.npy", *_paths(folder, 3), "--labels", folder / "ignored.npy", "--json",
            "--per-row"]
    whole = cli(*args).json()
    monkeypatch.setattr(compare, "PIECE_VALUES", 3 * V)
    pieces = cli(*args).json()
    assert pieces == whole
    kept = np.flatnonzero(ignored != -100)
    assert pieces["tests"][2]["kl"]["mean"] == pytest.approx(reference(base[kept], tests[2][kept], None)["kl"].mean(),
                                                             rel=1e-9)


def test_shift_refuses_labels_cut_into_other_sequences(cli, tmp_path):
    rng = np.random.default_rng(2)
    base, test = rng.normal(size=(48, 20)), rng.normal(size=(48, 20))
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "t.npy", test)
    np.save(tmp_path / "l.npy", rng.integers(0, 20, size=(3, 16)))
    run = cli("compare", tmp_path / "b.npy", tmp_path / "t.npy", "--labels", tmp_path / "l.npy", "--shift")
    assert run.code == 2 and run.err.startswith("klcli: error: labels (") and "--shift needs the logits' leading " \
        "shape (48,)" in run.err  # (it once shifted label 16 into sequence 0)
    np.save(tmp_path / "b3.npy", base.reshape(3, 16, 20))
    np.save(tmp_path / "t3.npy", test.reshape(3, 16, 20))
    np.save(tmp_path / "flat.npy", np.load(tmp_path / "l.npy").reshape(-1))
    for labels in ("l.npy", "flat.npy"):  # (B, T) labels, or flat ones, with (B, T, V) logits: 3 × 15 tokens
        run = cli("compare", tmp_path / "b3.npy", tmp_path / "t3.npy", "--labels", tmp_path / labels, "--shift",
                  "--json")
        assert run.code == 0 and run.json()["tokens"] == 45, run.err


def test_long_candidate_names_are_numbered_to_keep_the_leaderboard_within_80_columns(cli, tmp_path):
    rng = np.random.default_rng(21)
    base = rng.normal(0, 2, size=(16, 10)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    names = []
    for index in range(2):
        name = f"a_rather_long_candidate_file_name_{index}.npy"
        np.save(tmp_path / name, base + rng.normal(0, 0.3, size=base.shape).astype(np.float32))
        names.append(tmp_path / name)
    run = cli("compare", tmp_path / "base.npy", *names)
    assert run.code == 0
    board = run.out[run.out.index("leaderboard"):].split("\n\n\n")[0]
    assert max(len(line) for line in board.splitlines()) <= 80, board
    for number, path in enumerate(names, 1):
        assert f" {number}  {path.name}" in board or f" {number}  {path}" in board
    short = cli("compare", tmp_path / "base.npy", *names, "--name", "a", "--name", "b").out
    assert " #  " not in short[short.index("leaderboard"):].split("\n\n\n")[0]  # short names stay in place
