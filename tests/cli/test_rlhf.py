"""klcli rlhf: the estimators against float64 references, their invariants, unbiasedness, and distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from klcli.core.rlhf import token_estimates
from tests.conftest import SAMPLES

special = pytest.importorskip("scipy.special")
RLHF = SAMPLES / "rlhf.npz"


def _references(policy, ref):
    """Per-sequence k1, k2, k3 written out by hand from padded rows."""
    out = {"k1": [], "k2": [], "k3": []}
    for p_row, r_row in zip(policy, ref):
        keep = ~np.isnan(p_row)
        log_r = r_row[keep] - p_row[keep]
        out["k1"].append(np.sum(-log_r))
        out["k2"].append(np.sum(0.5 * log_r**2))
        out["k3"].append(np.sum(np.exp(log_r) - 1 - log_r))
    return {k: np.array(v) for k, v in out.items()}


def test_every_figure(cli):
    data = np.load(RLHF)
    doc = cli("rlhf", f"{RLHF}:policy", f"{RLHF}:ref", "--reward", f"{RLHF}:reward", "--beta", "0.05",
              "--policy-logits", f"{RLHF}:policy_logits", "--ref-logits", f"{RLHF}:ref_logits",
              "--json", "--per-row").json()
    ref = _references(data["policy"], data["ref"])
    for name in ("k1", "k2", "k3"):
        got = doc["estimators"][name]
        np.testing.assert_allclose(got["per_sequence"], ref[name], rtol=1e-12)
        assert got["mean"] == pytest.approx(ref[name].mean(), rel=1e-12)
        assert got["stderr"] == pytest.approx(np.std(ref[name], ddof=1) / math.sqrt(6), rel=1e-12)
    assert doc["value"] == pytest.approx(ref["k3"].mean(), rel=1e-12)
    assert doc["tokens"] == 60 and doc["sequences"] == 6
    objective = data["reward"] - 0.05 * ref["k3"]
    assert doc["objective"]["mean"] == pytest.approx(objective.mean(), rel=1e-12)
    assert doc["objective"]["estimator"] == "k3" and doc["objective"]["beta"] == 0.05
    log_pi = special.log_softmax(data["policy_logits"], axis=-1)
    log_ref = special.log_softmax(data["ref_logits"], axis=-1)
    exact_tokens = np.sum(np.exp(log_pi) * (log_pi - log_ref), axis=-1)
    exact = np.nansum(np.where(np.isnan(data["policy"]), np.nan, exact_tokens), axis=1)
    np.testing.assert_allclose(doc["exact_kl"]["per_sequence"], exact, rtol=1e-10)
    assert doc["per_row"]["exact_kl"] == pytest.approx(list(exact), rel=1e-10)


def test_invariants():
    rng = np.random.default_rng(0)
    policy, ref = rng.normal(-2, 1, 1000), rng.normal(-2, 1, 1000)
    estimates = token_estimates(policy, ref)
    assert np.all(estimates["k2"] >= 0) and np.all(estimates["k3"] >= 0)
    same = token_estimates(policy, policy)
    assert all(np.all(values == 0) for values in same.values())


def test_unbiased_k1_and_k3():
    """Tokens sampled from π: k1 and k3 average to the exact KL within 4 standard errors."""
    rng = np.random.default_rng(42)
    log_pi = special.log_softmax(rng.normal(0, 1.5, 6))
    log_ref = special.log_softmax(rng.normal(0, 1.5, 6))
    exact = float(np.sum(np.exp(log_pi) * (log_pi - log_ref)))
    tokens = rng.choice(6, p=np.exp(log_pi), size=200_000)
    estimates = token_estimates(log_pi[tokens], log_ref[tokens])
    for name in ("k1", "k3"):
        values = estimates[name]
        assert abs(values.mean() - exact) < 4 * values.std(ddof=1) / math.sqrt(values.size), name
    assert estimates["k2"].mean() != pytest.approx(exact, rel=1e-3)  # k2 is biased


def test_groups_and_one_dimensional_input(cli, tmp_path):
    (tmp_path / "t.csv").write_text("seq,pi,ref\na,-1.0,-1.5\na,-0.5,-0.25\nb,-2.0,-1.0\n")
    doc = cli("rlhf", f"{tmp_path / 't.csv'}:pi", f"{tmp_path / 't.csv'}:ref", "--group", "seq", "--json",
              "--per-row", "--estimator", "k1").json()
    assert doc["sequences"] == 2 and list(doc["estimators"]) == ["k1"]
    assert doc["estimators"]["k1"]["per_sequence"] == pytest.approx([(-1.0 + 1.5) + (-0.5 + 0.25), -2.0 + 1.0])
    run = cli("rlhf", "--json", "--", "-1.0,-0.5", "-1.5,-0.25")  # negative inline numbers go after --
    assert run.json()["sequences"] == 1 and run.json()["tokens"] == 2


def test_reward_as_a_number_and_errors(cli, tmp_path):
    data = np.load(RLHF)
    doc = cli("rlhf", f"{RLHF}:policy", f"{RLHF}:ref", "--reward", "1.0", "--estimator", "k2", "--json").json()
    ref = _references(data["policy"], data["ref"])
    assert doc["objective"]["mean"] == pytest.approx(1.0 - 0.1 * ref["k2"].mean(), rel=1e-12)
    np.save(tmp_path / "short.npy", data["ref"][:, :11])
    run = cli("rlhf", f"{RLHF}:policy", tmp_path / "short.npy")
    assert run.code == 2 and "has 72 token log-probs but" in run.err
    shifted = data["ref"].copy()
    shifted[1, 9] = -1.0  # padding differs
    np.save(tmp_path / "pad.npy", shifted)
    run = cli("rlhf", f"{RLHF}:policy", tmp_path / "pad.npy")
    assert run.code == 2 and run.err == ("klcli: error: POLICY and REF are padded differently: position 21 "
                                         "(sequence 1) is NaN in POLICY only\n")


def test_distillation_t2_scale(cli):
    teacher, student = SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy"
    plain = float(cli("kl", teacher, student, "--logits", "-T", "2", "-q").out)
    scaled = float(cli("kl", teacher, student, "--logits", "-T", "2", "--t2-scale", "-q").out)
    z, y = np.load(teacher).astype(float), np.load(student).astype(float)
    p, q = special.softmax(z / 2, axis=1), special.softmax(y / 2, axis=1)
    by_hand = 4 * np.mean(np.sum(p * np.log(p / q), axis=1))
    assert scaled == pytest.approx(by_hand, rel=1e-9) and scaled == pytest.approx(4 * plain, rel=1e-14)


def test_token_logprobs_read_off_the_logits_at_the_labels(cli):
    from_logprobs = cli("rlhf", f"{RLHF}:policy", f"{RLHF}:ref", "--json", "--per-row").json()
    from_logits = cli("rlhf", "--policy-logits", f"{RLHF}:policy_logits", "--ref-logits", f"{RLHF}:ref_logits",
                      "--labels", f"{RLHF}:tokens", "--json", "--per-row").json()
    for name in ("k1", "k2", "k3"):
        np.testing.assert_allclose(from_logits["estimators"][name]["per_sequence"],
                                   from_logprobs["estimators"][name]["per_sequence"], rtol=1e-12, atol=1e-15)
    assert from_logits["tokens"] == 60 and "exact_kl" in from_logits
    missing = cli("rlhf", "--policy-logits", f"{RLHF}:policy_logits", "--ref-logits", f"{RLHF}:ref_logits")
    assert missing.code == 2 and "give --policy-logits, --ref-logits and --labels" in missing.err


# --- padding: a sequence that is all padding, impossible log-probabilities, NaN rewards ----------------------------


@pytest.fixture
def padded_batch(tmp_path):
    """B=4 sequences of T=32 over V=1000; sequence 2 is all padding; padding holds garbage (or NaN) logits."""
    rng = np.random.default_rng(9)
    B, T, V = 4, 32, 1000
    policy = rng.normal(0, 2, size=(B, T, V)).astype(np.float32)
    ref = (policy + rng.normal(0, 0.1, size=policy.shape)).astype(np.float32)
    tokens = rng.integers(0, V, size=(B, T))
    lengths = (32, 20, 0, 7)
    for b, length in enumerate(lengths):
        tokens[b, length:] = -100
        policy[b, length:] = rng.normal(0, 1, size=(T - length, V)) * 1e4
        ref[b, length:] = np.nan
    log_pi = special.log_softmax(policy.astype(np.float64), axis=-1)
    log_ref = special.log_softmax(ref.astype(np.float64), axis=-1)
    keep = tokens != -100
    at = np.where(keep, tokens, 0)[..., None]
    token_pi = np.where(keep, np.take_along_axis(log_pi, at, -1)[..., 0], np.nan)
    token_ref = np.where(keep, np.take_along_axis(log_ref, at, -1)[..., 0], np.nan)
    exact = np.where(keep, np.sum(np.exp(log_pi) * (log_pi - log_ref), axis=-1), 0.0).sum(axis=1)
    for name, array in (("policy_logits", policy), ("ref_logits", ref), ("tokens", tokens), ("policy", token_pi),
                        ("ref", token_ref)):
        np.save(tmp_path / f"{name}.npy", array)
    return token_pi, token_ref, exact, tmp_path


def test_a_sequence_that_is_all_padding_is_not_a_sequence(cli, padded_batch):
    token_pi, token_ref, exact, folder = padded_batch
    real = np.array([0, 1, 3])
    ref = _references(token_pi[real], token_ref[real])
    rewards = np.array([1.0, 0.5, np.nan, 2.0])  # no reward for the empty sequence
    np.save(folder / "reward.npy", rewards)
    routes = {
        "logprobs": [folder / "policy.npy", folder / "ref.npy", "--policy-logits", folder / "policy_logits.npy",
                     "--ref-logits", folder / "ref_logits.npy"],
        "logits": ["--policy-logits", folder / "policy_logits.npy", "--ref-logits", folder / "ref_logits.npy",
                   "--labels", folder / "tokens.npy"],
    }
    for route, args in routes.items():
        doc = cli("rlhf", *args, "--reward", folder / "reward.npy", "--json", "--per-row").json()
        assert doc["sequences"] == 3 and doc["tokens"] == 59 and doc["rows"] == 4, route
        for name in ("k1", "k2", "k3"):
            got = doc["estimators"][name]
            assert got["mean"] == pytest.approx(ref[name].mean(), rel=1e-9), (route, name)
            assert got["stderr"] == pytest.approx(np.std(ref[name], ddof=1) / math.sqrt(3), rel=1e-9)
            assert got["per_sequence"][2] is None and doc["per_row"][name][2] is None
            np.testing.assert_allclose([got["per_sequence"][i] for i in real], ref[name], rtol=1e-9)
        assert doc["value"] == pytest.approx(ref["k3"].mean(), rel=1e-9)
        assert doc["summary"]["count"] == 3 and doc["summary"]["argmax"] == int(real[np.argmax(ref["k3"])])
        assert doc["exact_kl"]["mean"] == pytest.approx(exact[real].mean(), rel=1e-9)
        objective = rewards[real] - 0.1 * ref["k3"]
        assert doc["objective"]["mean"] == pytest.approx(objective.mean(), rel=1e-9)
        assert any("all padding" in note for note in doc["notes"])


def test_impossible_log_probabilities_and_rewards_are_errors(cli, padded_batch):
    token_pi, token_ref, _, folder = padded_batch
    above = token_pi.copy()
    above[1, 3] = 0.25  # a probability, not a log-probability
    np.save(folder / "above.npy", above)
    run = cli("rlhf", folder / "above.npy", folder / "ref.npy")
    assert run.code == 2 and f"POLICY ({folder / 'above.npy'}): position 35 (sequence 1) holds 0.25; " \
        "log-probabilities must be <= 0" in run.err
    impossible = token_pi.copy()
    impossible[3, 6] = -np.inf
    np.save(folder / "impossible.npy", impossible)
    run = cli("rlhf", folder / "impossible.npy", folder / "ref.npy")
    assert run.code == 2 and "position 102 (sequence 3) holds -inf, but the tokens were sampled from the policy" \
        in run.err
    np.save(folder / "nan_reward.npy", np.array([1.0, np.nan, 0.0, 2.0]))
    run = cli("rlhf", folder / "policy.npy", folder / "ref.npy", "--reward", folder / "nan_reward.npy")
    assert run.code == 2 and "the reward of sequence 1 is nan; give a finite reward" in run.err
    run = cli("rlhf", folder / "policy.npy", folder / "ref.npy", "--reward", "nan")
    assert run.code == 2 and "--reward nan: the reward of sequence 0 is nan" in run.err
    np.save(folder / "all_padding.npy", np.full((2, 5), np.nan))
    run = cli("rlhf", folder / "all_padding.npy", folder / "all_padding.npy")
    assert run.code == 2 and "no token was counted" in run.err


def test_a_reference_probability_of_zero_is_an_infinite_kl_with_a_note(cli, padded_batch):
    token_pi, token_ref, _, folder = padded_batch
    zero = token_ref.copy()
    zero[1, 4] = -np.inf
    np.save(folder / "zero.npy", zero)
    doc = cli("rlhf", folder / "policy.npy", folder / "zero.npy", "--json", "--per-row").json()
    for name in ("k1", "k2", "k3"):
        assert doc["estimators"][name]["per_sequence"][1] == "inf"
        assert doc["estimators"][name]["mean"] == "inf" and doc["estimators"][name]["stderr"] is None
    finite = _references(token_pi[[0, 3]], token_ref[[0, 3]])
    assert doc["estimators"]["k3"]["per_sequence"][3] == pytest.approx(finite["k3"][1], rel=1e-9)
    assert any("REF gives probability 0" in note and "position 36 (sequence 1)" in note for note in doc["notes"])
