"""The commands as plans: validated option groups, then the computation; and the commands from Python.

Each command's options form one group, checked here — every combination
check, before any file is read — and turned into a :class:`Plan`: the
operands it will read and the computation that streams them through the
engine into a :class:`~klcli.result.Result` (in nats). The CLI (``cli.py``)
and the Python functions below call the same planners, so ``klcli.run("kl",
…)`` returns exactly the document that ``klcli kl … --json`` prints.

Options are the CLI's long names with ``-`` → ``_``, as Python values::

    >>> import klcli
    >>> klcli.run("kl", "0.5,0.5", "0.9,0.1")["value"]
    0.5108256237659907
    >>> round(klcli.run("js", [1.0, 0.0], [0.0, 1.0], base=2)["value"], 12)
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from klcli.errors import UsageError
from klcli.result import Result, json_safe

KINDS = ("probs", "logprobs", "logits")
PRECISIONS = ("precise", "fast")
TAILS = ("bucket", "renormalize")
ESTIMATORS = ("k1", "k2", "k3", "all")


@dataclass(frozen=True)
class Plan:
    """A command whose options have been checked: the operands it reads, and how to compute its Result."""

    command: str
    operands: list
    compute: Callable[[Any], Result]  # progress (or None) → Result


def _value(option):
    """An option's plain value (the CLI passes enum members, Python callers strings)."""
    return option.value if isinstance(option, Enum) else option


def one_of(option: str, value, choices: tuple[str, ...]) -> str:
    """A string option's value, if it is one of ``choices`` (Typer's own enum error names no fix)."""
    value = _value(value)
    if value not in choices:
        raise UsageError(f"{option} {value!r}: use {' or '.join(choices)}")
    return value


def _temperature(temperature: float) -> float:
    if not temperature > 0:
        raise UsageError(f"--temperature {temperature:g}: the temperature must be > 0")
    return temperature


def _threads(threads: int) -> int:
    if threads < 0:
        raise UsageError(f"--threads {threads}: use 0 (every core) or a positive number")
    return threads


def reading(kind=None, logits=False, p_kind=None, q_kind=None, normalize=False, epsilon=0.0, temperature=1.0,
            threads=0, precision="precise"):
    """The validated reading group of two-operand commands (kinds, normalising, smoothing, threads, precision)."""
    from klcli.commands.common import Reading

    kind, p_kind, q_kind = (_value(k) for k in (kind, p_kind, q_kind))
    for option, given in (("--kind", kind), ("--p-kind", p_kind), ("--q-kind", q_kind)):
        if given is not None:
            one_of(option, given, KINDS)
    if logits and kind not in (None, "logits"):
        raise UsageError(f"--logits and --kind {kind} disagree; give one of them")
    if epsilon < 0:
        raise UsageError(f"--epsilon {epsilon:g}: must be >= 0")
    both = "logits" if logits else kind
    return Reading(p_kind=p_kind or both or "probs", q_kind=q_kind or both or "probs",
                   temperature=_temperature(temperature), normalize=normalize, epsilon=epsilon,
                   threads=_threads(threads), precision=one_of("--precision", precision, PRECISIONS))


def token_reading(kind, labels, ignore_index, shift, temperature, *, label_smoothing=0.0, group=None, threads=0,
                  precision="precise", kind_given=True):
    """The validated reading group of token commands (perplexity, xent --labels)."""
    from klcli.commands.perplexity import TokenReading

    kind = one_of("--kind", kind, KINDS)
    _temperature(temperature)
    if shift and kind != "logits":
        raise UsageError("--shift aligns logits with the next token's label; it needs --kind logits and --labels")
    if not 0.0 <= label_smoothing <= 1.0:
        raise UsageError(f"--label-smoothing {label_smoothing:g}: must be in [0, 1]")
    return TokenReading(kind=kind, labels=labels, ignore_index=ignore_index, shift=shift, temperature=temperature,
                        label_smoothing=label_smoothing, group=group, threads=_threads(threads),
                        precision=one_of("--precision", precision, PRECISIONS), kind_given=kind_given)


def _listed(*operands) -> list:
    return [operand for operand in operands if operand is not None]


# --- the planners: one per command ----------------------------------------------------------------------------


def plan_kl(p, q, *, direction="forward", t2_scale=False, precision="precise", kind=None, logits=False, p_kind=None,
            q_kind=None, normalize=False, epsilon=0.0, temperature=1.0, threads=0, tail="bucket") -> Plan:
    from klcli.commands import divergence

    direction = one_of("--direction", direction, divergence.DIRECTIONS)
    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads, precision)
    tail = one_of("--tail", tail, TAILS)
    return Plan("kl", [p, q], lambda progress: divergence.kl(p, q, group, direction=direction, progress=progress,
                                                             tail=tail, t2_scale=t2_scale))


def plan_xent(p, q=None, *, labels=None, ignore_index=-100, shift=False, label_smoothing=0.0, kind=None,
              logits=False, p_kind=None, q_kind=None, normalize=False, epsilon=0.0, temperature=1.0, threads=0,
              precision="precise", tail="bucket") -> Plan:
    kind, p_kind = _value(kind), _value(p_kind)
    if labels is not None:
        from klcli.commands import perplexity

        if q is not None:
            raise UsageError("give Q or --labels, not both: with --labels, P holds logits scored against the labels")
        if kind not in (None, "logits") or p_kind not in (None, "logits"):
            raise UsageError("--labels scores logits; for per-token log-probabilities use klcli perplexity")
        tokens = token_reading("logits", labels, ignore_index, shift, temperature, label_smoothing=label_smoothing,
                               threads=threads, precision=precision,
                               kind_given="logits" in (kind, p_kind) or bool(logits))
        return Plan("xent", [p, labels],
                    lambda progress: perplexity.token_cross_entropy(p, tokens, progress=progress))
    if q is None:
        raise UsageError("xent needs Q, or --labels IDS to score logits P against observed tokens")
    if one_of("--precision", precision, PRECISIONS) == "fast":
        raise UsageError("--precision fast: xent has a float32 kernel only with --labels; between two "
                         "distributions use the default precision (or kl --precision fast for D(P‖Q))")
    from klcli.commands import divergence

    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads)
    tail = one_of("--tail", tail, TAILS)
    return Plan("xent", [p, q], lambda progress: divergence.xent(p, q, group, progress=progress, tail=tail))


def plan_js(p, q, *, weights=None, kind=None, logits=False, p_kind=None, q_kind=None, normalize=False, epsilon=0.0,
            temperature=1.0, threads=0, tail="bucket") -> Plan:
    from klcli.commands import divergence

    pair = divergence.parse_weights(weights)
    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads)
    tail = one_of("--tail", tail, TAILS)
    return Plan("js", [p, q], lambda progress: divergence.js(p, q, group, weights=pair, progress=progress,
                                                             tail=tail))


def plan_perplexity(scores, *, labels=None, kind=None, ignore_index=-100, shift=False, group=None,
                    temperature=1.0, threads=0, precision="precise") -> Plan:
    from klcli.commands import perplexity

    kind = _value(kind)
    if group is not None and kind in (None, "logits"):
        raise UsageError("--group goes with --kind logprobs or probs (per-token values in a table column)")
    tokens = token_reading(kind or "logits", labels, ignore_index, shift, temperature, group=group, threads=threads,
                           precision=precision, kind_given=kind is not None)
    return Plan("perplexity", _listed(scores, labels),
                lambda progress: perplexity.perplexity(scores, tokens, progress=progress))


def plan_compare(base_model, test_model, *more_tests, labels=None, ignore_index=-100, mask=None, shift=False,
                 top_k=5, worst=10, kind=None, base_kind=None, test_kind=None, normalize=False, epsilon=0.0,
                 temperature=1.0, threads=0, tail="bucket", name=None, sort="kl.mean", vocab_size=None) -> Plan:
    from klcli.commands import compare

    tests = [test_model, *more_tests]
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: must be >= 1")
    if worst < 0:
        raise UsageError(f"--worst {worst}: must be >= 0")
    if vocab_size is not None and vocab_size < 1:
        raise UsageError(f"--vocab-size {vocab_size}: must be >= 1")
    names = [name] if isinstance(name, str) else list(name or [])
    if names and len(names) != len(tests):
        raise UsageError(f"--name given {len(names)} times for {len(tests)} TEST operands; give one --name per "
                         "TEST, in their order (or none)")
    if len(set(names)) != len(names):
        duplicate = next(label for label in names if names.count(label) > 1)
        raise UsageError(f"--name {duplicate!r} is given twice; give each candidate its own name")
    kind, base_kind, test_kind = _value(kind), _value(base_kind), _value(test_kind)
    both = kind or "logits"
    group = replace(reading(None, False, base_kind or both, test_kind or both, normalize, epsilon, temperature,
                            threads),
                    p_kind_given=bool(base_kind or kind), q_kind_given=bool(test_kind or kind),
                    kind_fix="pass --kind probs (or --base-kind/--test-kind probs) if these are probabilities")
    tail = one_of("--tail", tail, TAILS)
    return Plan("compare", _listed(base_model, *tests, labels, mask),
                lambda progress: compare.compare(base_model, tests, group, names=names or None, labels=labels,
                                                 mask=mask, shift=shift, top_k=top_k, worst=worst,
                                                 ignore_index=ignore_index, vocab_size=vocab_size, sort=sort,
                                                 progress=progress, tail=tail))


def plan_rlhf(policy=None, ref=None, *, estimator="all", group=None, reward=None, beta=0.1, policy_logits=None,
              ref_logits=None, labels=None, ignore_index=-100, threads=0, per_row=False) -> Plan:
    from klcli.commands import rlhf

    estimator = one_of("--estimator", estimator, ESTIMATORS)
    _threads(threads)
    return Plan("rlhf", _listed(policy, ref, policy_logits, ref_logits, labels),
                lambda progress: rlhf.rlhf(policy, ref, estimator=estimator, group=group, reward=reward, beta=beta,
                                           policy_logits=policy_logits, ref_logits=ref_logits, labels=labels,
                                           ignore_index=ignore_index, per_row=per_row, threads=threads))


def plan_gaussian(params=None, *, mu1=None, sigma1=None, var1=None, logvar1=None, cov1=None, mu2=None, sigma2=None,
                  var2=None, logvar2=None, cov2=None, vae=False, mu=None, logvar=None, direction="forward") -> Plan:
    from klcli.commands import gaussian

    direction = one_of("--direction", direction, ("forward", "reverse", "both"))
    sides = {"--mu1": mu1, "--sigma1": sigma1, "--var1": var1, "--logvar1": logvar1, "--cov1": cov1,
             "--mu2": mu2, "--sigma2": sigma2, "--var2": var2, "--logvar2": logvar2, "--cov2": cov2}
    given = [option for option, value in sides.items() if value is not None]
    if vae:
        if given or params is not None:
            raise UsageError(f"--vae takes --mu and --logvar only, not {(given or ['PARAMS'])[0]}")
        if mu is None or logvar is None:
            raise UsageError("--vae needs --mu MU and --logvar LOGVAR (the encoder's outputs, (n, k))")
        return Plan("gaussian", [mu, logvar], lambda progress: gaussian.vae(mu, logvar))
    if mu is not None or logvar is not None:
        raise UsageError("--mu and --logvar go with --vae; for two Gaussians use --mu1/--mu2 and --logvar1/--logvar2")
    if params is not None:
        if given:
            raise UsageError(f"give a PARAMS table or {given[0]} and the other parameter options, not both")
        return Plan("gaussian", [params], lambda progress: gaussian.gaussian_table(params, direction=direction))
    first = gaussian.Side(1, mu1, sigma1, var1, logvar1, cov1)
    second = gaussian.Side(2, mu2, sigma2, var2, logvar2, cov2)
    first.scale(), second.scale()  # two spreads for one Gaussian: refused before any file is read
    return Plan("gaussian", _listed(*sides.values()),
                lambda progress: gaussian.gaussian(first, second, direction=direction))


PLANNERS: dict[str, Callable[..., Plan]] = {
    "kl": plan_kl,
    "xent": plan_xent,
    "js": plan_js,
    "perplexity": plan_perplexity,
    "compare": plan_compare,
    "rlhf": plan_rlhf,
    "gaussian": plan_gaussian,
}


def plan(command: str, *operands, **options) -> Plan:
    """The plan of ``klcli COMMAND OPERANDS --OPTIONS``; option combinations are checked here."""
    try:
        planner = PLANNERS[command]
    except KeyError:
        raise UsageError(f"no command {command!r}; use one of {', '.join(PLANNERS)}") from None
    return planner(*operands, **options)


# --- from Python -----------------------------------------------------------------------------------------------


def run(command: str, *operands, base="e", bits: bool = False, per_row: bool = False, check=None,
        **options) -> dict:
    """Run a klcli command from Python; the dictionary ``klcli COMMAND … --json`` prints.

    Parameters
    ----------
    command : str
        ``kl``, ``xent``, ``js``, ``perplexity``, ``compare``, ``rlhf`` or ``gaussian``.
    *operands
        The command's operands: paths, ``FILE:SELECTOR`` strings, inline numbers (``"0.1,0.9"``) or arrays.
    base : {"e", 2, 10} or float
        The unit of information figures (``--base``); ``bits=True`` is ``base=2``.
    per_row : bool
        Add the per-row values (``per_row``), as ``--per-row`` does.
    check : list of str, optional
        ``--check`` expressions; their outcomes are under ``checks``, and ``passed``.
    **options
        The command's options, named as the CLI's long names with ``-`` → ``_`` (``logits=True``,
        ``top_k=3``, ``weights=(0.3, 0.7)``); files are streamed exactly as the CLI streams them.

    Returns
    -------
    dict
        The JSON document (strict JSON values: an infinite figure is the string ``"inf"``).

    Examples
    --------
    >>> run("kl", "0.5,0.5", "0.9,0.1", base=2)["unit"]
    'bits'
    >>> run("gaussian", mu1=0, sigma1=1, mu2=1, sigma2=2)["value"]
    0.4431471805599453
    """
    from klcli.output import Delivery

    if command == "rlhf":
        options["per_row"] = per_row
    delivery = Delivery.from_options(fmt=None, json_flag=True, per_row=per_row, quiet=False, output=None,
                                     check=list(check) if check else None, no_progress=True, base=_base_text(base),
                                     bits=bits)
    result = plan(command, *operands, **options).compute(None)
    _, document = delivery.report(result)
    return json_safe(document)


def _base_text(base) -> str:
    return base if isinstance(base, str) else f"{base:g}"


def compare(base, test, *more_tests, labels=None, kind="logits", top_k: int = 5, **options) -> dict:
    """The drift report between a base model's outputs and one or more candidates', as ``klcli compare … --json``.

    ``base`` and each test are operands (paths, ``FILE:SELECTOR``) or arrays of logits (rows × vocabulary, or any
    rank with the vocabulary last); further options as in :func:`run` (``worst``, ``ignore_index``, ``base_kind``,
    ``temperature``, ``name`` (a list, one per test), ``sort``, ``vocab_size``, ``per_row``, ``check`` …).
    """
    return run("compare", base, test, *more_tests, labels=labels, kind=kind, top_k=top_k, **options)


def rlhf(policy=None, ref=None, **options) -> dict:
    """Per-sequence KL estimates (k1, k2, k3) from sampled tokens' log-probabilities, as ``klcli rlhf … --json``.

    ``policy`` and ``ref`` are operands or arrays (1-D, or 2-D padded with NaN, one row per sequence); further
    options as in :func:`run` (``estimator``, ``reward``, ``beta``, ``policy_logits``, ``ref_logits``,
    ``labels``, ``per_row`` …).
    """
    return run("rlhf", policy, ref, **options)
