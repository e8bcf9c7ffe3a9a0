"""The CLI as users call it: every output mode, units, checks and exit codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from klcli.core.stats import SUMMARY_KEYS
from tests.conftest import SAMPLES

scipy_stats = pytest.importorskip("scipy.stats")
distance = pytest.importorskip("scipy.spatial.distance")

P, Q = str(SAMPLES / "p.csv"), str(SAMPLES / "q.csv")


def _samples():
    return np.load(SAMPLES / "p.npy"), np.load(SAMPLES / "q.npy")


def test_quiet_reference_value(cli):
    run = cli("kl", "0.5,0.5", "0.9,0.1", "-q")
    assert (run.code, run.out, run.err) == (0, "0.5108256237659907\n", "")


def test_bits_divide_by_ln2(cli):
    nats = float(cli("kl", "0.5,0.5", "0.9,0.1", "-q").out)
    bits = float(cli("kl", "0.5,0.5", "0.9,0.1", "-q", "--bits").out)
    assert bits == pytest.approx(nats / math.log(2), rel=1e-15)
    assert cli("kl", "0.5,0.5", "0.9,0.1", "--base", "10", "--json").json()["unit"] == "bans"


def test_json_has_every_key_of_the_contract(cli):
    doc = cli("kl", P, Q, "--json").json()
    for key in ("command", "version", "unit", "value", "rows", "inputs", "summary", "checks", "passed"):
        assert key in doc
    assert doc["command"] == "kl" and doc["unit"] == "nats" and doc["rows"] == 8 and doc["passed"] is True
    assert list(doc["summary"]) == list(SUMMARY_KEYS)
    assert [(i["role"], i["kind"], i["shape"], i["dtype"]) for i in doc["inputs"]] == [
        ("P", "probs", [8, 5], "float64"), ("Q", "probs", [8, 5], "float64")]
    p, q = _samples()
    expected = scipy_stats.entropy(p, q, axis=1)
    assert doc["value"] == pytest.approx(expected.mean(), rel=1e-12)
    summary = doc["summary"]
    assert summary["std"] == pytest.approx(np.std(expected, ddof=1), rel=1e-12)
    assert summary["stderr"] == pytest.approx(np.std(expected, ddof=1) / math.sqrt(8), rel=1e-12)
    for key, fraction in (("p5", 5), ("median", 50), ("p99_9", 99.9)):
        assert summary[key] == pytest.approx(np.percentile(expected, fraction), rel=1e-12)
    assert summary["argmax"] == int(np.argmax(expected))


def test_infinity_is_a_string_in_strict_json(cli):
    run = cli("kl", "0.5,0.5", "1,0", "--json")
    assert run.code == 0
    doc = json.loads(run.out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["value"] == "inf"
    assert "klcli: note: D(P‖Q) is inf in 1 row(s), first row 0" in run.err


def test_per_row_csv_and_ndjson(cli):
    p, q = _samples()
    csv_out = cli("js", P, Q, "--format", "csv").out.splitlines()
    assert csv_out[0] == "row,js_divergence,js_distance"
    distances = [float(line.split(",")[2]) for line in csv_out[1:]]
    np.testing.assert_allclose(distances, distance.jensenshannon(p, q, axis=1), rtol=1e-12)
    lines = cli("kl", P, Q, "--format", "ndjson").out.splitlines()
    assert len(lines) == 8
    assert json.loads(lines[3])["row"] == 3
    assert json.loads(lines[3])["kl"] == pytest.approx(scipy_stats.entropy(p[3], q[3]), rel=1e-12)


def test_direction_both(cli):
    p, q = _samples()
    doc = cli("kl", P, Q, "--direction", "both", "--json", "--per-row").json()
    forward, reverse = scipy_stats.entropy(p, q, axis=1), scipy_stats.entropy(q, p, axis=1)
    np.testing.assert_allclose(doc["per_row"]["kl_reverse"], reverse, rtol=1e-12)
    np.testing.assert_allclose(doc["per_row"]["kl_symmetric"], forward + reverse, rtol=1e-12)
    assert doc["value"] == pytest.approx(forward.mean(), rel=1e-12)
    assert cli("kl", P, Q, "--direction", "reverse", "--json").json()["value"] == pytest.approx(reverse.mean())


def test_xent_figures_and_identity(cli):
    p, q = _samples()
    doc = cli("xent", P, Q, "--json", "--per-row", "--bits").json()
    ln2 = math.log(2)
    np.testing.assert_allclose(doc["per_row"]["entropy"], scipy_stats.entropy(p, axis=1) / ln2, rtol=1e-12)
    np.testing.assert_allclose(doc["per_row"]["kl"], scipy_stats.entropy(p, q, axis=1) / ln2, rtol=1e-12)
    p_normalised, q_normalised = p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)
    cross_entropy = -np.sum(p_normalised * np.log(q_normalised), axis=1)  # −Σ p log q, formed independently
    np.testing.assert_allclose(doc["per_row"]["cross_entropy"], cross_entropy / ln2, rtol=1e-12)
    assert doc["value"] == doc["cross_entropy"]["mean"] == doc["summary"]["mean"]


def test_hand_worked_xent_and_js(cli):
    # H((½,½),(¼,¾)) = ½ln4 + ½ln(4/3);  JSD((1,0),(0,1)) = ln 2 = 1 bit
    assert float(cli("xent", "0.5,0.5", "0.25,0.75", "-q").out) == pytest.approx(
        0.5 * math.log(4) + 0.5 * math.log(4 / 3), rel=1e-15)
    assert float(cli("js", "1,0", "0,1", "-q", "--bits").out) == pytest.approx(1.0, rel=1e-15)


def test_weighted_js(cli):
    p, q = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    w = (0.3, 0.7)
    m = w[0] * p + w[1] * q
    expected = w[0] * scipy_stats.entropy(p, m) + w[1] * scipy_stats.entropy(q, m)
    got = float(cli("js", "0.2,0.8", "0.6,0.4", "--weights", "0.3,0.7", "-q").out)
    assert got == pytest.approx(expected, rel=1e-12)


def test_kinds_logits_temperature_and_normalize(cli):
    special = pytest.importorskip("scipy.special")
    teacher = np.load(SAMPLES / "teacher_logits.npy").astype(np.float64)
    student = np.load(SAMPLES / "student_logits.npy").astype(np.float64)
    doc = cli("kl", SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy", "--logits", "-T", "2",
              "--json", "--per-row").json()
    expected = scipy_stats.entropy(special.softmax(teacher / 2, axis=1), special.softmax(student / 2, axis=1), axis=1)
    np.testing.assert_allclose(doc["per_row"]["kl"], expected, rtol=1e-9)
    counts = np.array([[40, 25, 20, 10, 5], [10, 20, 30, 25, 15]], dtype=float)
    run = cli("kl", SAMPLES / "counts.csv", "0.2,0.2,0.2,0.2,0.2", "--normalize", "--json", "--per-row")
    np.testing.assert_allclose(run.json()["per_row"]["kl"], scipy_stats.entropy(counts, np.full(5, 0.2), axis=1),
                               rtol=1e-12)
    mixed = cli("kl", "0,0", "0.5,0.5", "--p-kind", "logits", "-q")
    assert float(mixed.out) == pytest.approx(0.0, abs=1e-16)


def test_epsilon_is_applied_and_said(cli):
    run = cli("kl", "0.5,0.5", "1,0", "--epsilon", "1e-3", "--json")
    p = np.array([0.5, 0.5]) + 1e-3
    q = np.array([1.0, 0.0]) + 1e-3
    assert run.json()["value"] == pytest.approx(scipy_stats.entropy(p, q), rel=1e-12)
    assert any("--epsilon" in note for note in run.json()["notes"])


def test_checks_pass_fail_and_exit_codes(cli):
    ok = cli("kl", P, Q, "--check", "value<1", "--check", "p99 <= 1", "--check", "kl.max>0", "--json")
    assert ok.code == 0
    assert [c["passed"] for c in ok.json()["checks"]] == [True, True, True]
    assert ok.json()["checks"][1]["key"] == "p99"
    failed = cli("kl", P, Q, "--check", "mean<0.01", "--json")
    assert failed.code == 1
    doc = failed.json()
    assert doc["passed"] is False
    check = doc["checks"][0]
    assert (check["expr"], check["key"], check["threshold"], check["passed"]) == ("mean<0.01", "mean", 0.01, False)
    assert check["actual"] == pytest.approx(doc["summary"]["mean"])
    assert failed.err.startswith("klcli: check failed: mean<0.01 (actual ")


def test_unknown_check_key_lists_keys(cli):
    run = cli("kl", P, Q, "--check", "nonsense<1")
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("klcli: error: --check 'nonsense': no such figure; available: value, rows, "
                              "summary.{count,mean,std,stderr,min,p0_1,")
    assert "kl.{count," in run.err and len(run.err.splitlines()) == 1


def test_output_file_is_written_atomically_and_never_over_an_input(cli, tmp_path):
    target = tmp_path / "result.json"
    run = cli("kl", P, Q, "--json", "-o", target)
    assert run.code == 0 and run.out == ""
    assert json.loads(target.read_text())["rows"] == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".klcli-")]
    copy = tmp_path / "p.csv"
    copy.write_bytes((SAMPLES / "p.csv").read_bytes())
    refused = cli("kl", copy, Q, "-o", copy)
    assert refused.code == 2
    assert refused.err == f"klcli: error: -o {copy}: is one of the inputs; klcli never overwrites its inputs\n"
    assert copy.read_bytes() == (SAMPLES / "p.csv").read_bytes()


def test_table_output(cli):
    run = cli("kl", P, Q)
    assert run.code == 0
    assert "mean D(P‖Q)" in run.out and "0.3316996 nats" in run.out
    assert "p99.9" in run.out and "argmax" in run.out
    assert "\x1b[" not in run.out  # no colour off a terminal
    single = cli("kl", "0.5,0.5", "0.9,0.1")
    assert "0.5108256 nats" in single.out and "argmax" not in single.out


def test_stdin_operand(cli):
    text = (SAMPLES / "p.csv").read_bytes()
    run = cli("kl", "-", Q, "-q", stdin=text)
    assert run.code == 0
    assert float(run.out) == pytest.approx(float(cli("kl", P, Q, "-q").out), rel=1e-15)


def test_version_and_help(cli):
    from klcli import __version__

    assert cli("--version").out == f"klcli {__version__}\n"
    for command in ("kl", "xent", "js"):
        run = cli(command, "--help")
        assert run.code == 0 and "Examples" in run.out and "--check" in run.out


def test_results_are_identical_for_every_thread_count(cli, tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "p.npy", rng.normal(0, 2, size=(700, 300)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.normal(0, 2, size=(700, 300)).astype(np.float32))
    for command in (["kl"], ["js"], ["kl", "--precision", "fast"]):
        runs = [cli(*command, tmp_path / "p.npy", tmp_path / "q.npy", "--logits", "--threads", threads, "--json",
                    "--per-row").json() for threads in ("1", "3")]
        assert runs[0]["per_row"] == runs[1]["per_row"] and runs[0]["value"] == runs[1]["value"]


def test_progress_bar_appears_only_when_enabled_and_after_its_delay(monkeypatch):
    import io

    from klcli import render

    silent = render.Progress(100, enabled=False)
    silent.update(50)
    assert silent._bar is None
    drawn = render.Progress(100, enabled=True)
    drawn.update(10)
    assert drawn._bar is None  # less than a second in: nothing yet
    drawn.DELAY = 0.0
    monkeypatch.setattr("sys.stderr", io.StringIO())
    drawn.update(20)
    assert drawn._bar is not None
    drawn.close()
    assert drawn._bar is None


def test_no_progress_flag_and_non_terminal_disable_the_bar(cli):
    from klcli.output import Delivery

    delivery = Delivery.from_options(fmt=None, json_flag=False, per_row=False, quiet=False, output=None, check=None,
                                     no_progress=False)
    assert delivery.progress is False  # standard error is not a terminal under pytest
    assert cli("kl", "0.5,0.5", "0.9,0.1", "-q", "--no-progress").code == 0


def test_untrusted_names_in_the_table_are_shown_not_obeyed(cli, tmp_path):
    # A crafted file name: rich markup and a terminal escape (set the window title).
    name = tmp_path / "[red]a\x1b]0;title\x07.npy"
    np.save(name, np.array([[0.5, 0.5], [0.25, 0.75]]))
    run = cli("kl", name, "0.5,0.5")
    assert run.code == 0
    assert "\x1b" not in run.out and "\x07" not in run.out
    assert "[red]a" in run.out and "\\x1b" in run.out  # (the long temporary path may wrap)
