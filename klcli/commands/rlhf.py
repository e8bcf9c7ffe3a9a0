"""``rlhf``: per-sequence KL estimates from sampled tokens' log-probs, the exact KL beside them, and the reward."""

from __future__ import annotations

import numpy as np

from klcli import engine
from klcli.commands.common import Reading, logits_checked, open_operands
from klcli.commands.perplexity import LOGITS_FIX
from klcli.core.discrete import kl_rows
from klcli.core.perplexity import as_token_ids
from klcli.core.positions import kept_log_rows, kept_rows
from klcli.core.rlhf import ESTIMATORS, mean_and_stderr, per_sequence, token_estimates
from klcli.core.stats import summarize
from klcli.engine import paired_blocks
from klcli.errors import DistributionError, InputError, RowCountError, ShapeError, UsageError
from klcli.io.operand import read_array
from klcli.io.source import rows_per_block
from klcli.result import Result


def _tokens(operand: str, role: str, group: str | None):
    """Token log-probs as (values, sequence id per value, number of sequences, source)."""
    values, source = read_array(operand, role)
    return _by_sequence(values, source, role, group)


def _label_ids(labels: str, ignore_index: int):
    """The sampled token ids, their sequence of each position, the number of sequences, and which are counted."""
    label_array, label_source = read_array(labels, "labels")
    ids = as_token_ids(label_array, label=label_source.label, first_position=0)
    _, sequence, count, _ = _by_sequence(np.zeros(label_array.shape), label_source, "--labels", None)
    return ids, sequence, count, ids != ignore_index, label_source


def _logits_pass(policy_logits: str, ref_logits: str, keep: np.ndarray, ids: np.ndarray | None, threads: int,
                 ignore_index: int):
    """Per position, from the two models' logits: D(π‖π_ref) over the vocabulary and, with ``ids``, the sampled
    tokens' log-probabilities; NaN where ``keep`` is False. Left-out positions (padding) are not read as logits.
    """
    policy_source, ref_source = (logits_checked(source, given=False, fix=LOGITS_FIX, notes=[])
                                 for source in open_operands((policy_logits, "--policy-logits"),
                                                             (ref_logits, "--ref-logits")))
    reading = Reading("logits", "logits", threads=threads)
    pairs = paired_blocks(policy_source.blocks(rows_per_block(policy_source.outcomes or 1)),
                          ref_source.blocks(rows_per_block(ref_source.outcomes or 1)),
                          block_rows=rows_per_block, p_label=policy_source.label, q_label=ref_source.label,
                          broadcast=False)
    exact = np.full(keep.size, np.nan)
    log_pi = np.full(keep.size, np.nan) if ids is not None else None
    log_ref = np.full(keep.size, np.nan) if ids is not None else None

    def work(item):
        start, p_block, q_block = item
        stop = start + p_block.shape[0]
        if stop > keep.size:
            raise ShapeError(f"the logits have more than {keep.size} positions but the tokens cover {keep.size} "
                             "(padding included); they must cover the same positions")
        kept = keep[start:stop]
        if not kept.any():
            return engine.Partial(start, stop)
        p = kept_log_rows(lambda b, at: reading.log_rows(b, "logits", policy_source, at), p_block, kept, start)
        q = kept_log_rows(lambda b, at: reading.log_rows(b, "logits", ref_source, at), q_block, kept, start)
        figures = {"at": kept_rows(kept, start, kept.size), "exact": kl_rows(p, q)}
        if ids is not None:
            chosen = ids[start:stop][kept]
            vocab = p.shifted.shape[1]
            if ((chosen < 0) | (chosen >= vocab)).any():
                at = start + int(np.flatnonzero(kept)[np.flatnonzero((chosen < 0) | (chosen >= vocab))[0]])
                raise ShapeError(f"--labels: the label at position {at} is {int(ids[at])}, outside the vocabulary "
                                 f"[0, {vocab}) (ignored positions use --ignore-index {ignore_index})")
            rows = np.arange(chosen.size)
            figures["log_pi"] = p.shifted[rows, chosen] - p.offset
            figures["log_ref"] = q.shifted[rows, chosen] - q.offset
        return engine.Partial(start, stop, values=figures)

    try:
        merged = engine.run(pairs, work, threads=threads)
    except RowCountError as exc:
        raise ShapeError(f"--policy-logits and --ref-logits must cover the same positions: {exc}") from None
    positions = merged.stop
    if merged.values:
        at = merged.values["at"]
        exact[at] = merged.values["exact"]
        if ids is not None:
            log_pi[at], log_ref[at] = merged.values["log_pi"], merged.values["log_ref"]
    if positions != keep.size:
        raise ShapeError(f"the logits have {positions} positions but the token log-probs have {keep.size} (padding "
                         "included); they must cover the same positions")
    inputs = [dict(policy_source.describe(positions), kind="logits"),
              dict(ref_source.describe(positions), kind="logits")]
    return exact, log_pi, log_ref, inputs


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


def _summary(per_seq: np.ndarray, real: np.ndarray, per_row: bool) -> dict:
    """Mean and stderr over the real sequences; ``per_sequence`` lists every sequence read (null: all padding)."""
    mean, stderr = mean_and_stderr(per_seq[real])
    figure = {"mean": mean, "stderr": stderr}
    if per_row:
        figure["per_sequence"] = np.where(real, per_seq, np.nan).tolist()
    return figure


def _reward(reward: str | None, sequences: int, real: np.ndarray) -> np.ndarray | None:
    if reward is None:
        return None
    label = f"--reward {reward}"
    try:
        if not isinstance(reward, (str, int, float)):
            raise ValueError("an array of rewards")
        values = np.full(sequences, float(reward))
    except ValueError:
        values, source = read_array(reward, "--reward")
        label = f"--reward ({source.label})"
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size not in (1, sequences):
            raise ShapeError(f"--reward has {values.size} values but there are {sequences} sequences; give one "
                             "reward per sequence (or one number)") from None
        values = np.broadcast_to(values, (sequences,)).astype(np.float64)
    bad = real & ~np.isfinite(values)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise InputError(f"{label}: the reward of sequence {at} is {float(values[at])!r}; give a finite reward for "
                         "every sequence that has tokens (one that is all padding may have any)")
    return values


def _where(position: int, sequence: np.ndarray) -> str:
    """A token's place, as errors name it: its position in the input and its sequence."""
    return f"position {position} (sequence {int(sequence[position])})"


def _check_logprobs(values: np.ndarray, counted: np.ndarray, sequence: np.ndarray, label: str, side: str) -> None:
    """Sampled tokens' log-probabilities must be <= 0; the policy's must also be > −inf (it sampled them)."""
    with np.errstate(invalid="ignore"):
        above = counted & (values > 1e-6)
    if above.any():
        at = int(np.flatnonzero(above)[0])
        raise DistributionError(f"{label}: {_where(at, sequence)} holds {float(values[at])!r}; log-probabilities "
                                "must be <= 0 (give log_softmax(logits)[token], not probabilities or logits; or "
                                "give the logits with --policy-logits, --ref-logits and --labels)")
    if side in ("POLICY", "sampler") and (impossible := counted & (values == -np.inf)).any():
        at = int(np.flatnonzero(impossible)[0])
        raise DistributionError(f"{label}: {_where(at, sequence)} holds -inf, but the tokens were sampled from the "
                                "policy, so each has probability > 0 under it; score them with the distribution they "
                                "were sampled from (the same temperature and top-k/top-p filter)")


# POLICY and REF must be the logits' log-softmax at the labels within this (float32 dumps round to about 1e-6).
AGREEMENT_NATS = 1e-4


def _checked_label_ids(labels: str | None, positions: int, inputs: list[dict]) -> np.ndarray | None:
    """``--labels`` given with POLICY and REF: the token ids, one per position of POLICY (padding included)."""
    if labels is None:
        return None
    label_array, label_source = read_array(labels, "labels")
    ids = as_token_ids(label_array, label=label_source.label, first_position=0).reshape(-1)
    if ids.size != positions:
        raise ShapeError(f"{label_source.label} has {ids.size} labels but POLICY has {positions} positions (padding "
                         "included); they must cover the same positions")
    inputs.append(dict(label_source.describe(), kind="labels"))
    return ids


def _agree(values: np.ndarray, from_logits: np.ndarray, counted: np.ndarray, sequence: np.ndarray, label: str,
           logits_option: str) -> None:
    """Token log-probs must equal the logits' log-softmax at the labels within AGREEMENT_NATS; else name the first."""
    with np.errstate(invalid="ignore"):
        apart = counted & ~(np.abs(values - from_logits) <= AGREEMENT_NATS)
    if apart.any():
        at = int(np.flatnonzero(apart)[0])
        raise InputError(f"{label}: {_where(at, sequence)} holds {float(values[at])!r} but log_softmax of "
                         f"{logits_option} at its label gives {float(from_logits[at])!r} (more than "
                         f"{AGREEMENT_NATS:g} nats apart); the log-probs and the logits do not score the same tokens "
                         "(a shifted label, another temperature, or other logits?)")


def weighted(estimates: dict[str, np.ndarray], policy: np.ndarray, behavior: np.ndarray):
    """Each token's estimates times its importance weight w = π/μ, and the weights' effective sample size.

    Tokens sampled from a behaviour policy μ rather than π: E_μ[w·k] = E_π[k], so the weighted sums are unbiased
    for the KL along μ's sampled prefixes, without self-normalisation. A token π gives probability 0 has weight 0
    and contributes 0 (not 0·inf). The effective sample size (Σw)²/Σw² (Kish) says how many tokens drawn from π
    the weighted ones are worth.

    Examples
    --------
    >>> import math
    >>> e, ess = weighted({"k1": np.array([1.0, 2.0])}, np.log([0.5, 0.2]), np.log([0.25, 0.4]))
    >>> e["k1"].tolist(), ess  # w = 2 and 0.5
    ([2.0, 1.0], 1.4705882352941178)
    """
    with np.errstate(over="ignore"):
        w = np.exp(np.asarray(policy, dtype=np.float64) - np.asarray(behavior, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        scaled = {name: np.where(w == 0, 0.0, w * values) for name, values in estimates.items()}
    square = float(np.sum(w * w))
    return scaled, float(np.sum(w)) ** 2 / square if square > 0 else 0.0


def _sequences_with_tokens(counted: np.ndarray, sequence: np.ndarray, count: int) -> np.ndarray:
    """Which sequences hold a token: one that is all padding is not a sequence (as in ``perplexity``)."""
    return np.bincount(sequence[counted], minlength=count) > 0


def rlhf(policy, ref, *, estimator: str = "all", group: str | None = None,
         reward: str | None = None, beta: float = 0.1, policy_logits: str | None = None,
         ref_logits: str | None = None, labels: str | None = None, ignore_index: int = -100,
         per_row: bool = False, threads: int = 0, behavior: str | None = None, per_token: bool = False) -> Result:
    """KL(π‖π_ref) estimated per sequence from sampled tokens, with the penalised objective and the exact KL.

    The sampled tokens' log-probabilities come from POLICY and REF, or, when
    those are not given, from ``policy_logits`` and ``ref_logits`` at ``labels``
    (given with POLICY and REF, ``labels`` checks them against the logits).
    ``behavior`` holds the log-probabilities under the policy μ that sampled the
    tokens: each token's estimate is weighted by π/μ (see :func:`weighted`).
    """
    if (policy is None) != (ref is None):
        raise UsageError("give both POLICY and REF, or neither (then --policy-logits, --ref-logits and --labels)")
    if policy is None:
        if policy_logits is None or ref_logits is None or labels is None:
            raise UsageError("without POLICY and REF, give --policy-logits, --ref-logits and --labels (the sampled "
                             "token ids) to read the tokens' log-probabilities off the logits")
        ids, sequence, count, keep, label_source = _label_ids(labels, ignore_index)
        exact_per_position, policy_values, ref_values, inputs = _logits_pass(
            policy_logits, ref_logits, keep, ids, threads, ignore_index)
        inputs.append(dict(label_source.describe(), kind="labels"))
        names = (f"--policy-logits {policy_logits}", f"--ref-logits {ref_logits}")
    else:
        if labels is not None and policy_logits is None:
            raise UsageError("--labels goes with --policy-logits and --ref-logits (with POLICY and REF, to check them "
                             "against the logits at the labels)")
        policy_values, sequence, count, policy_source = _tokens(policy, "POLICY", group)
        ref_values, _, _, ref_source = _tokens(ref, "REF", group)
        # The values' own shape: a text column's length is known only once it has been read.
        inputs = [dict(policy_source.describe(policy_values.shape[0]), kind="logprobs"),
                  dict(ref_source.describe(ref_values.shape[0]), kind="logprobs")]
        names = (policy_source.label, ref_source.label)
        exact_per_position = None
    if (policy_logits is None) != (ref_logits is None):
        raise UsageError("give both --policy-logits and --ref-logits for the exact KL")
    if policy_values.shape != ref_values.shape:
        raise ShapeError(f"{names[0]} has {policy_values.size} token log-probs but {names[1]} has "
                         f"{ref_values.size}; they must score the same sampled tokens")
    padding_p, padding_q = np.isnan(policy_values), np.isnan(ref_values)
    if (padding_p != padding_q).any():
        at = int(np.flatnonzero(padding_p != padding_q)[0])
        raise ShapeError(f"POLICY and REF are padded differently: {_where(at, sequence)} is NaN in "
                         f"{'POLICY' if padding_p[at] else 'REF'} only")
    counted = ~padding_p
    behavior_values = None
    if behavior is not None:
        behavior_values, _, _, behavior_source = _tokens(behavior, "--behavior", group)
        inputs.append(dict(behavior_source.describe(behavior_values.shape[0]), kind="logprobs"))
        if behavior_values.shape != policy_values.shape or (np.isnan(behavior_values) != padding_p).any():
            raise ShapeError(f"{behavior_source.label} must score the same sampled tokens as POLICY, "
                             f"padded alike: it has {behavior_values.size} values, POLICY {policy_values.size}")
        _check_logprobs(behavior_values, counted, sequence, behavior_source.label, "sampler")
    # The tokens were sampled from μ where it is given: then π may give one probability 0 (its weight is 0).
    _check_logprobs(policy_values, counted, sequence, names[0], "POLICY" if behavior is None else "REF")
    _check_logprobs(ref_values, counted, sequence, names[1], "REF")
    real = _sequences_with_tokens(counted, sequence, count)
    if not real.any():
        raise InputError(f"{names[0]}: no token was counted (every value is padding); there is nothing "
                         "to estimate")
    with np.errstate(invalid="ignore"):  # inf − inf where μ sampled a token π cannot give: weight 0, see weighted
        estimates = token_estimates(policy_values[counted], ref_values[counted])
    if behavior_values is not None:
        estimates, effective = weighted(estimates, policy_values[counted], behavior_values[counted])
    ids = sequence[counted]
    per_seq = {name: per_sequence(values, ids, count) for name, values in estimates.items()}
    chosen = ESTIMATORS if estimator == "all" else (estimator,)
    figures = {
        "estimators": {name: _summary(per_seq[name], real, per_row) for name in chosen},
        "tokens": int(counted.sum()),
        "sequences": int(real.sum()),
    }
    if per_token:  # the token-level mean over every token of the batch (GRPO's convention)
        figures["per_token"] = {name: dict(zip(("mean", "stderr"), mean_and_stderr(estimates[name])))
                                for name in chosen}
    if behavior_values is not None:
        figures["effective_sample_size"] = effective
    notes = []
    if (zero := counted & (ref_values == -np.inf)).any():
        at = int(np.flatnonzero(zero)[0])
        notes.append(f"REF gives probability 0 (log-prob -inf) to {int(zero.sum())} sampled token(s), first at "
                     f"{_where(at, sequence)}: the KL estimates of "
                     f"{np.unique(sequence[zero]).size} sequence(s) are inf")
    if (padded := count - int(real.sum())):
        notes.append(f"{padded} of {count} sequences are all padding: they are not counted (null in per-row output)")
    objective_estimator = "k3" if estimator == "all" else estimator
    per_row_extra: dict[str, np.ndarray] = {}
    rewards = _reward(reward, count, real)
    if rewards is not None:
        penalised = rewards - beta * per_seq[objective_estimator]
        figures["objective"] = {**_summary(penalised, real, per_row), "estimator": objective_estimator, "beta": beta}
        per_row_extra["objective"] = penalised
    if policy_logits is not None:
        if exact_per_position is None:  # POLICY and REF given: the logits at the same positions, padding included
            label_ids = _checked_label_ids(labels, policy_values.size, inputs)
            exact_per_position, logit_pi, logit_ref, logit_inputs = _logits_pass(
                policy_logits, ref_logits, counted, label_ids, threads, ignore_index)
            inputs += logit_inputs
            if label_ids is not None:
                _agree(policy_values, logit_pi, counted, sequence, names[0], "--policy-logits")
                _agree(ref_values, logit_ref, counted, sequence, names[1], "--ref-logits")
        exact = per_sequence(exact_per_position[counted], ids, count)
        figures["exact_kl"] = _summary(exact, real, per_row)
        per_row_extra["exact_kl"] = exact
    per_row_values = {name: np.where(real, values, np.nan)
                      for name, values in ({name: per_seq[name] for name in chosen} | per_row_extra).items()}
    k3 = per_seq["k3"][real]
    return Result(
        command="rlhf",
        headline="mean per-sequence KL (k3)",
        value=float(np.mean(k3)),
        rows=count,
        inputs=inputs,
        summary=summarize(k3, np.flatnonzero(real)),
        summary_name="k3 per sequence",
        summary_over="sequences",
        figures=figures,
        per_row=per_row_values,
        notes=notes,
        # The objective R − β·KL is in the rewards' units (β·KL in nats, as trainers compute it): never scaled.
        information={"k1": 1.0, "k2": 1.0, "k3": 1.0, "estimators": 1.0, "exact_kl": 1.0, "per_token": 1.0},
    )
