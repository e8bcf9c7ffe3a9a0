"""rlhf --behavior (importance-weighted estimators), --per-token, and --labels checking POLICY against the logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SAMPLES

RLHF = SAMPLES / "rlhf.npz"
# A small vocabulary: the policy π, the reference π_ref and the behaviour policy μ that sampled the tokens.
PI = np.array([0.5, 0.2, 0.2, 0.1])
REF = np.array([0.25, 0.25, 0.25, 0.25])
MU = np.array([0.3, 0.3, 0.1, 0.3])


def _sampled(tmp_path, sequences=400, length=8, seed=0):
    tokens = np.random.default_rng(seed).choice(4, size=(sequences, length), p=MU)
    for name, dist in (("policy", PI), ("ref", REF), ("mu", MU)):
        np.save(tmp_path / f"{name}.npy", np.log(dist)[tokens])
    return tokens


def test_weighted_estimators_are_unbiased(cli, tmp_path):
    _sampled(tmp_path)
    truth = 8 * float(np.sum(PI * np.log(PI / REF)))  # exact D(π‖π_ref) of 8 independent tokens
    doc = cli("rlhf", tmp_path / "policy.npy", tmp_path / "ref.npy", "--behavior", tmp_path / "mu.npy",
              "--json").json()
    for name in ("k1", "k3"):
        estimate = doc["estimators"][name]
        assert abs(estimate["mean"] - truth) < 4 * estimate["stderr"], (name, estimate, truth)
    # Without the weights, tokens from μ estimate something else: this test can fail.
    unweighted = cli("rlhf", tmp_path / "policy.npy", tmp_path / "ref.npy", "--json").json()["estimators"]["k1"]
    assert abs(unweighted["mean"] - truth) > 4 * unweighted["stderr"]


def test_weights_and_effective_sample_size_by_hand(cli, tmp_path):
    tokens = _sampled(tmp_path, sequences=3, length=4, seed=1)
    doc = cli("rlhf", tmp_path / "policy.npy", tmp_path / "ref.npy", "--behavior", tmp_path / "mu.npy",
              "--per-row", "--per-token", "--json").json()
    w = (PI / MU)[tokens]
    log_r = np.log(REF / PI)[tokens]
    k1, k3 = w * -log_r, w * (np.exp(log_r) - 1 - log_r)
    np.testing.assert_allclose(doc["estimators"]["k1"]["per_sequence"], k1.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(doc["estimators"]["k3"]["per_sequence"], k3.sum(axis=1), rtol=1e-12)
    assert doc["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert doc["per_token"]["k3"]["mean"] == pytest.approx(k3.mean(), rel=1e-12)
    assert doc["per_token"]["k3"]["stderr"] == pytest.approx(k3.std(ddof=1) / math.sqrt(k3.size), rel=1e-12)


def test_per_token_by_hand(cli, tmp_path):
    policy = np.array([[-0.5, -1.0, np.nan], [-2.0, -0.25, -1.5]])
    ref = np.array([[-1.0, -0.5, np.nan], [-1.0, -1.25, -1.0]])
    np.save(tmp_path / "p.npy", policy)
    np.save(tmp_path / "r.npy", ref)
    doc = cli("rlhf", tmp_path / "p.npy", tmp_path / "r.npy", "--per-token", "--bits", "--json").json()
    k1 = [0.5, -0.5, -1.0, 1.0, -0.5]  # log π − log π_ref of the five real tokens
    mean = sum(k1) / 5
    std = math.sqrt(sum((k - mean) ** 2 for k in k1) / 4)
    assert doc["per_token"]["k1"]["mean"] == pytest.approx(mean / math.log(2), abs=1e-15)
    assert doc["per_token"]["k1"]["stderr"] == pytest.approx(std / math.sqrt(5) / math.log(2), rel=1e-12)
    assert doc["estimators"]["k1"]["mean"] == pytest.approx((0.0 + -0.5) / 2 / math.log(2), abs=1e-15)


def test_zero_policy_probability_under_behavior_weighs_zero(cli, tmp_path):
    np.save(tmp_path / "p.npy", np.array([-np.inf, math.log(0.5)]))
    np.save(tmp_path / "r.npy", np.array([math.log(0.5), math.log(0.25)]))
    np.save(tmp_path / "mu.npy", np.array([math.log(0.5), math.log(0.5)]))
    doc = cli("rlhf", tmp_path / "p.npy", tmp_path / "r.npy", "--behavior", tmp_path / "mu.npy", "--json").json()
    assert doc["estimators"]["k1"]["mean"] == pytest.approx(math.log(2), rel=1e-15)  # w = 1 on the second token


def test_behavior_must_match(cli, tmp_path):
    np.save(tmp_path / "p.npy", np.log([[0.5, 0.5]]))
    np.save(tmp_path / "mu.npy", np.log([[0.5, 0.5, 0.5]]))
    run = cli("rlhf", tmp_path / "p.npy", tmp_path / "p.npy", "--behavior", tmp_path / "mu.npy")
    assert run.code == 2 and "--behavior" in run.err and "must score the same sampled tokens" in run.err
    np.save(tmp_path / "mu.npy", np.array([[-np.inf, 0.0]]))
    run = cli("rlhf", tmp_path / "p.npy", tmp_path / "p.npy", "--behavior", tmp_path / "mu.npy")
    assert run.code == 2 and "position 0 (sequence 0) holds -inf" in run.err


def _with_labels(cli, policy):
    return cli("rlhf", policy, f"{RLHF}:ref", "--policy-logits", f"{RLHF}:policy_logits", "--ref-logits",
               f"{RLHF}:ref_logits", "--labels", f"{RLHF}:tokens", "--json")


def test_labels_check_policy_against_the_logits(cli, tmp_path):
    from scipy.special import log_softmax

    data = np.load(RLHF)
    ours = log_softmax(data["policy_logits"], axis=-1)
    tokens = np.where(data["tokens"] < 0, 0, data["tokens"])
    recomputed = np.take_along_axis(ours, tokens[..., None], axis=-1)[..., 0]
    assert np.allclose(recomputed[~np.isnan(data["policy"])], data["policy"][~np.isnan(data["policy"])], atol=1e-4)
    assert _with_labels(cli, f"{RLHF}:policy").code == 0
    shifted = data["policy"].copy()
    shifted[1, 4] += 2e-4
    np.save(tmp_path / "policy.npy", shifted)
    run = _with_labels(cli, tmp_path / "policy.npy")
    assert run.code == 2
    assert run.err.startswith("klcli: error: POLICY") and "position 16 (sequence 1)" in run.err
    assert "more than 0.0001 nats apart" in run.err
