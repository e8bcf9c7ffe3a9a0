"""``rlhf``: per-sequence KL estimates from sampled tokens' log-probs, the exact KL beside them, and the reward."""

from __future__ import annotations

import numpy as np

from klcli.commands.common import Reading, logits_checked, open_operands, run_pairs
from klcli.commands.perplexity import LOGITS_FIX, block_losses
from klcli.core.discrete import kl_rows
from klcli.core.perplexity import as_token_ids
from klcli.core.rlhf import ESTIMATORS, mean_and_stderr, per_sequence, token_estimates
from klcli.core.stats import summarize
from klcli.errors import ShapeError, UsageError
from klcli.io.operand import read_array
from klcli.result import Result
from klcli.units import Unit


def _tokens(operand: str, role: str, group: str | None):
    """Token log-probs as (values, sequence id per value, number of sequences, source)."""
    values, source = read_array(operand, role)
    return _by_sequence(values, source, role, group)


def _tokens_from_logits(logits_operand: str, labels: str, role: str, ignore_index: int, threads: int):
    """The sampled tokens' log-probabilities read off a model's logits: log_softmax(z)[label], NaN where ignored."""
    (logits,) = open_operands((logits_operand, role))
    logits = logits_checked(logits, given=False, fix=LOGITS_FIX, notes=[])
    label_array, label_source = read_array(labels, "labels")
    ids = as_token_ids(label_array, label=label_source.label, first_position=0)
    values = np.full(ids.size, np.nan)
    for start, loss, counted in block_losses(logits, [ids], label_source.label, ignore_index=ignore_index,
                                             threads=threads):
        values[start : start + loss.size] = np.where(counted, -loss, np.nan)
    return _by_sequence(values.reshape(label_array.shape), logits, role, None)


def _by_sequence(values: np.ndarray, source, role: str, group: str | None):
    if group is not None:
        if values.ndim != 1:
            raise UsageError(f"--group {group}: needs one column of per-token values ({role} is {values.ndim}-D)")
        from klcli.io.tables import group_codes

        sequence = group_codes(source, group)
        if sequence.size != values.size:
            raise ShapeError(f"--group {group}: has {sequence.size} rows but {source.label} has {values.size}")
        return values, sequence, int(sequence.max()) + 1 if sequence.size else 0, source
    if values.ndim == 1:
        return values, np.zeros(values.size, dtype=np.int64), 1, source
    rows = values.reshape(-1, values.shape[-1])
    return rows.reshape(-1), np.repeat(np.arange(rows.shape[0]), rows.shape[1]), rows.shape[0], source


def _summary(per_seq: np.ndarray, per_row: bool) -> dict:
    mean, stderr = mean_and_stderr(per_seq)
    figure = {"mean": mean, "stderr": stderr}
    if per_row:
        figure["per_sequence"] = per_seq.tolist()
    return figure


def _reward(reward: str | None, sequences: int) -> np.ndarray | None:
    if reward is None:
        return None
    try:
        return np.full(sequences, float(reward))
    except ValueError:
        values, _ = read_array(reward, "--reward")
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size not in (1, sequences):
            raise ShapeError(f"--reward has {values.size} values but there are {sequences} sequences; give one "
                             "reward per sequence (or one number)") from None
        return np.broadcast_to(values, (sequences,)).astype(np.float64)


def rlhf(policy: str | None, ref: str | None, unit: Unit, *, estimator: str = "all", group: str | None = None,
         reward: str | None = None, beta: float = 0.1, policy_logits: str | None = None,
         ref_logits: str | None = None, labels: str | None = None, ignore_index: int = -100,
         per_row: bool = False, threads: int = 0) -> Result:
    """KL(π‖π_ref) estimated per sequence from sampled tokens, with the penalised objective and the exact KL.

    The sampled tokens' log-probabilities come from POLICY and REF, or, when
    those are not given, from ``policy_logits`` and ``ref_logits`` at ``labels``.
    """
    if (policy is None) != (ref is None):
        raise UsageError("give both POLICY and REF, or neither (then --policy-logits, --ref-logits and --labels)")
    if policy is None:
        if not (policy_logits and ref_logits and labels):
            raise UsageError("without POLICY and REF, give --policy-logits, --ref-logits and --labels (the sampled "
                             "token ids) to read the tokens' log-probabilities off the logits")
        policy_values, sequence, count, policy_source = _tokens_from_logits(policy_logits, labels, "--policy-logits",
                                                                            ignore_index, threads)
        ref_values, _, _, ref_source = _tokens_from_logits(ref_logits, labels, "--ref-logits", ignore_index, threads)
    else:
        if labels is not None:
            raise UsageError("--labels goes with --policy-logits and --ref-logits when POLICY and REF are not given")
        policy_values, sequence, count, policy_source = _tokens(policy, "POLICY", group)
        ref_values, _, _, ref_source = _tokens(ref, "REF", group)
    if policy_values.shape != ref_values.shape:
        raise ShapeError(f"{policy_source.label} has {policy_values.size} token log-probs but {ref_source.label} has "
                         f"{ref_values.size}; they must score the same sampled tokens")
    padding_p, padding_q = np.isnan(policy_values), np.isnan(ref_values)
    if (padding_p != padding_q).any():
        at = int(np.flatnonzero(padding_p != padding_q)[0])
        raise ShapeError(f"POLICY and REF are padded differently: position {at} is NaN in one only")
    counted = ~padding_p
    estimates = token_estimates(policy_values[counted], ref_values[counted])
    ids = sequence[counted]
    per_seq = {name: unit.from_nats(per_sequence(values, ids, count)) for name, values in estimates.items()}
    chosen = ESTIMATORS if estimator == "all" else (estimator,)
    figures = {
        "estimators": {name: _summary(per_seq[name], per_row) for name in chosen},
        "tokens": int(counted.sum()),
        "sequences": count,
    }
    kind = "logprobs" if policy is not None else "logits"
    # The values' own shape: a text column's length is known only once it has been read.
    inputs = [dict(policy_source.describe(policy_values.shape[0]), kind=kind),
              dict(ref_source.describe(ref_values.shape[0]), kind=kind)]
    objective_estimator = "k3" if estimator == "all" else estimator
    per_row_extra: dict[str, np.ndarray] = {}
    rewards = _reward(reward, count)
    if rewards is not None:
        penalised = rewards - beta * per_seq[objective_estimator]
        figures["objective"] = {**_summary(penalised, per_row), "estimator": objective_estimator, "beta": beta}
        per_row_extra["objective"] = penalised
    if (policy_logits is None) != (ref_logits is None):
        raise UsageError("give both --policy-logits and --ref-logits for the exact KL")
    if policy_logits is not None:
        exact, logit_inputs = _exact(policy_logits, ref_logits, counted, ids, count, threads)
        figures["exact_kl"] = _summary(unit.from_nats(exact), per_row)
        per_row_extra["exact_kl"] = unit.from_nats(exact)
        inputs += logit_inputs
    per_row_values = {name: per_seq[name] for name in chosen} | per_row_extra
    k3_mean = float(np.mean(per_seq["k3"]))
    return Result(
        command="rlhf",
        headline="mean per-sequence KL (k3)",
        value=k3_mean,
        unit=unit,
        rows=count,
        inputs=inputs,
        summary=summarize(per_seq["k3"]),
        summary_name="k3 per sequence",
        summary_over="sequences",
        figures=figures,
        per_row=per_row_values,
    )


def _exact(policy_logits: str, ref_logits: str, counted: np.ndarray, ids: np.ndarray, count: int, threads: int):
    """Σ over a sequence's positions of D(π‖π_ref) over the whole vocabulary."""
    policy_source, ref_source = open_operands((policy_logits, "--policy-logits"), (ref_logits, "--ref-logits"))
    run = run_pairs(policy_source, ref_source, Reading("logits", "logits", threads=threads, p_kind_given=False,
                                                            q_kind_given=False, kind_fix=LOGITS_FIX),
                    lambda p, q: {"kl": kl_rows(p, q)})
    per_position = run.per_row["kl"]
    if per_position.size != counted.size:
        raise ShapeError(f"the logits have {per_position.size} positions but the token log-probs have "
                         f"{counted.size} (padding included); they must cover the same positions")
    inputs = [dict(policy_source.describe(run.p_rows), kind="logits"),
              dict(ref_source.describe(run.q_rows), kind="logits")]
    return per_sequence(per_position[counted], ids, count), inputs
