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
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from klcli.errors import UsageError
from klcli.result import Result, json_safe

KINDS = ("probs", "logprobs", "logits")
PRECISIONS = ("precise", "fast")
TAILS = ("bucket", "renormalize")
ESTIMATORS = ("k1", "k2", "k3", "all")


@dataclass(frozen=True)
class Report:
    """A further file the delivered JSON document is written to (compare's ``--html``), atomically like ``-o``."""

    option: str  # the option that names it, for error messages
    path: str
    render: Callable[[dict], str]  # the delivered document → the file's text


@dataclass(frozen=True)
class Plan:
    """A command whose options have been checked: the operands it reads, and how to compute its Result."""

    command: str
    operands: list
    compute: Callable[[Any], Result]  # progress (or None) → Result
    reports: tuple[Report, ...] = ()
    # A streaming command's map and finish (klcli.pieces): --jobs, --partial, klcli merge and Dask run it in
    # pieces of rows. None: the command runs in one piece only.
    split: Any = None
    arguments: tuple = ()  # the operands as given, and the options, as plan() received them: what a worker
    options: dict = field(default_factory=dict)  # process plans again from (and a partial file records)


def _split_plan(command: str, operands: list, split, reports: tuple[Report, ...] = ()) -> Plan:
    """A plan computed as its split's finish of the one piece that is every row."""
    return Plan(command, operands, lambda progress: split.finish(split.map(None, progress)), reports, split)


def _token_plan(command: str, scores, operands: list, tokens, report) -> Plan:
    from klcli.commands import perplexity
    from klcli.pieces import Split

    return _split_plan(command, operands, Split(
        layout=lambda: perplexity.token_layout(scores, tokens),
        map=lambda rows, progress: perplexity.token_map(scores, tokens, rows, progress),
        finish=lambda piece: report(perplexity.scores_of(piece, tokens), tokens)))


def _divergence_plan(command: str, p, q, group, tail: str, **options) -> Plan:
    from klcli.commands import divergence
    from klcli.pieces import Split

    return _split_plan(command, [p, q], Split(
        layout=lambda: divergence.divergence_layout(p, q, tail),
        map=lambda rows, progress: divergence.divergence_map(command, p, q, group, rows, progress=progress,
                                                             tail=tail, **options),
        finish=lambda piece: divergence.divergence_finish(command, piece, group, **options)))


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


def _samples_only(given: dict) -> None:
    """``--samples`` reads points, not distributions: the reading options have no meaning with it."""
    for option, value in given.items():
        if value:
            raise UsageError(f"{option} does not apply to --samples (sample points, not distributions); "
                             "--samples takes --k")


def _k(k) -> int:
    if not (isinstance(k, int) and k >= 1):
        raise UsageError(f"--k {k}: the neighbour must be a whole number >= 1")
    return k


def plan_kl(p, q, *, direction="forward", t2_scale=False, precision="precise", kind=None, logits=False, p_kind=None,
            q_kind=None, normalize=False, epsilon=0.0, temperature=1.0, threads=0, tail="bucket", samples=False,
            k=5) -> Plan:
    from klcli.commands import divergence

    if samples:
        from klcli.commands import samples as from_samples

        _samples_only({"--direction": _value(direction) != "forward", "--t2-scale": t2_scale,
                       "--precision fast": _value(precision) == "fast", "--kind": kind, "--logits": logits,
                       "--p-kind": p_kind, "--q-kind": q_kind, "--normalize": normalize, "--epsilon": epsilon,
                       "--temperature": temperature != 1.0})
        k = _k(k)
        return Plan("kl", [p, q], lambda progress: from_samples.kl_from_samples(p, q, k=k))

    direction = one_of("--direction", direction, divergence.DIRECTIONS)
    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads, precision)
    tail = one_of("--tail", tail, TAILS)
    return _divergence_plan("kl", p, q, group, tail, direction=direction, t2_scale=t2_scale)


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
        return _token_plan("xent", p, [p, labels], tokens, perplexity.cross_entropy_of_scores)
    if q is None:
        raise UsageError("xent needs Q, or --labels IDS to score logits P against observed tokens")
    if one_of("--precision", precision, PRECISIONS) == "fast":
        raise UsageError("--precision fast: xent has a float32 kernel only with --labels; between two "
                         "distributions use the default precision (or kl --precision fast for D(P‖Q))")
    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads)
    tail = one_of("--tail", tail, TAILS)
    return _divergence_plan("xent", p, q, group, tail)


def plan_js(p, q, *, weights=None, kind=None, logits=False, p_kind=None, q_kind=None, normalize=False, epsilon=0.0,
            temperature=1.0, threads=0, tail="bucket", precision="precise") -> Plan:
    from klcli.commands import divergence

    pair = divergence.parse_weights(weights)
    group = reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads, precision)
    tail = one_of("--tail", tail, TAILS)
    return _divergence_plan("js", p, q, group, tail, weights=pair)


def plan_entropy(p, *, by_leading=0, kind=None, logits=False, normalize=False, temperature=1.0,
                 threads=0, samples=False, k=5) -> Plan:
    from klcli.commands import entropy

    if samples:
        from klcli.commands import samples as from_samples

        _samples_only({"--by-leading": by_leading, "--kind": kind, "--logits": logits, "--normalize": normalize,
                       "--temperature": temperature != 1.0})
        k = _k(k)
        return Plan("entropy", [p], lambda progress: from_samples.entropy_from_samples(p, k=k))

    if by_leading < 0:
        raise UsageError(f"--by-leading {by_leading}: give the number of leading axes to group by (>= 1)")
    group = reading(kind, logits, None, None, normalize, 0.0, temperature, threads)
    return Plan("entropy", [p], lambda progress: entropy.entropy(p, group, by_leading=by_leading,
                                                                 progress=progress))


def plan_perplexity(scores, *, labels=None, kind=None, ignore_index=-100, shift=False, group=None,
                    temperature=1.0, threads=0, precision="precise", bytes=None, words=None) -> Plan:  # noqa: A002
    from klcli.commands import perplexity

    kind = _value(kind)
    if group is not None and kind in (None, "logits"):
        raise UsageError("--group goes with --kind logprobs or probs (per-token values in a table column)")
    tokens = token_reading(kind or "logits", labels, ignore_index, shift, temperature, group=group, threads=threads,
                           precision=precision, kind_given=kind is not None)
    return _token_plan("perplexity", scores, _listed(scores, labels), tokens,
                       lambda scores, tokens: perplexity.perplexity_of_scores(scores, tokens, byte_counts=bytes,
                                                                              word_counts=words))


def plan_compare(base_model, test_model, *more_tests, labels=None, ignore_index=-100, mask=None, shift=False,
                 top_k=5, worst=10, kind=None, base_kind=None, test_kind=None, normalize=False, epsilon=0.0,
                 temperature=1.0, threads=0, tail="bucket", name=None, sort="kl.mean", vocab_size=None,
                 tokenizer=None, vocab=None, html=None, precision="precise") -> Plan:
    from klcli.commands import compare
    from klcli.pieces import Split

    tests = [test_model, *more_tests]
    # The report options (token text, --html): the vocabulary is read before the work, the HTML after it.
    if tokenizer is not None and vocab is not None:
        raise UsageError("give --tokenizer or --vocab, not both: each names the tokens' text")
    if html in ("", "-"):
        raise UsageError(f"--html {html!r}: give a file name; standard output holds the table or JSON")
    reports: tuple[Report, ...] = ()
    if html is not None:
        from klcli import report_html

        reports = (Report("--html", html, report_html.html_report),)
    texts = _listed(tokenizer, vocab)
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
                            threads, precision),
                    p_kind_given=bool(base_kind or kind), q_kind_given=bool(test_kind or kind),
                    kind_fix="pass --kind probs (or --base-kind/--test-kind probs) if these are probabilities")
    tail = one_of("--tail", tail, TAILS)
    vocabularies: dict = {}

    def vocabulary():
        """The token texts of --tokenizer/--vocab (read once; None without either)."""
        from klcli.io.tokenizer import read_vocabulary

        if "read" not in vocabularies:
            vocabularies["read"] = read_vocabulary(tokenizer, vocab)
        return vocabularies["read"]

    def finish(piece) -> Result:
        from klcli.commands.tokens import with_token_text

        result = compare.compare_finish(piece, group, top_k=top_k, worst=worst, sort=sort)
        return with_token_text(result, vocabulary()) if vocabulary() is not None else result

    split = Split(
        layout=lambda: compare.compare_layout(base_model, tests, labels=labels, mask=mask, shift=shift, tail=tail,
                                              vocab_size=vocab_size),
        map=lambda rows, progress: compare.compare_map(base_model, tests, group, rows, names=names or None,
                                                       labels=labels, mask=mask, shift=shift, top_k=top_k,
                                                       ignore_index=ignore_index, vocab_size=vocab_size,
                                                       progress=progress, tail=tail),
        finish=finish)

    def compute(progress) -> Result:
        vocabulary()  # a bad tokenizer or vocabulary file is an error before the work
        return finish(split.map(None, progress))

    return Plan("compare", _listed(base_model, *tests, labels, mask) + texts, compute, reports, split)


def plan_rlhf(policy=None, ref=None, *, estimator="all", group=None, reward=None, beta=0.1, policy_logits=None,
              ref_logits=None, labels=None, ignore_index=-100, threads=0, per_row=False, behavior=None,
              per_token=False) -> Plan:
    from klcli.commands import rlhf

    estimator = one_of("--estimator", estimator, ESTIMATORS)
    _threads(threads)
    return Plan("rlhf", _listed(policy, ref, policy_logits, ref_logits, labels, behavior),
                lambda progress: rlhf.rlhf(policy, ref, estimator=estimator, group=group, reward=reward, beta=beta,
                                           policy_logits=policy_logits, ref_logits=ref_logits, labels=labels,
                                           ignore_index=ignore_index, per_row=per_row, threads=threads,
                                           behavior=behavior, per_token=per_token))


def plan_gaussian(params=None, *, mu1=None, sigma1=None, var1=None, logvar1=None, cov1=None, mu2=None, sigma2=None,
                  var2=None, logvar2=None, cov2=None, vae=False, mu=None, logvar=None, direction="forward",
                  fit=None, diagonal=False, knn=False, k=5) -> Plan:
    from klcli.commands import gaussian

    direction = one_of("--direction", direction, ("forward", "reverse", "both"))
    sides = {"--mu1": mu1, "--sigma1": sigma1, "--var1": var1, "--logvar1": logvar1, "--cov1": cov1,
             "--mu2": mu2, "--sigma2": sigma2, "--var2": var2, "--logvar2": logvar2, "--cov2": cov2}
    given = [option for option, value in sides.items() if value is not None]
    if fit is not None:
        others = given + ["--vae"] * bool(vae) + ["PARAMS"] * (params is not None) + ["--mu"] * (mu is not None)
        if others or logvar is not None:
            raise UsageError(f"--fit P Q fits its Gaussians to samples; it takes no {(others or ['--logvar'])[0]}")
        if len(fit) != 2:
            raise UsageError("--fit takes two operands, P and Q (sample points, (n, d) each)")
        fit_p, fit_q = fit
        k = _k(k)
        return Plan("gaussian", [fit_p, fit_q], lambda progress: gaussian.fit(
            fit_p, fit_q, diagonal=diagonal, direction=direction, knn=knn, k=k))
    if diagonal or knn:
        raise UsageError(f"{'--diagonal' if diagonal else '--knn'} goes with --fit P Q")
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


def plan_reference(scores, *, output=None, top_k=None, labels=None, kind=None, ignore_index=-100, temperature=1.0,
                   dtype="float32", threads=0) -> Plan:
    from klcli.commands import reference

    if top_k is None or top_k < 1:
        raise UsageError("reference needs --top-k K >= 1: how many of each position's most probable tokens to keep")
    if output is None or output == "-":
        raise UsageError("reference needs -o REF, the file to write (a safetensors file, e.g. base.ref.safetensors)")
    kind = _value(kind)
    chosen = one_of("--kind", kind or "logits", KINDS)
    dtype = one_of("--dtype", dtype, reference.DTYPES)
    _temperature(temperature)
    _threads(threads)
    return Plan("reference", _listed(scores, labels),
                lambda progress: reference.write_reference(scores, output, top_k=top_k, labels=labels, kind=chosen,
                                                           kind_given=kind is not None, temperature=temperature,
                                                           ignore_index=ignore_index, dtype=dtype, threads=threads,
                                                           progress=progress))


PLANNERS: dict[str, Callable[..., Plan]] = {
    "kl": plan_kl,
    "xent": plan_xent,
    "js": plan_js,
    "entropy": plan_entropy,
    "perplexity": plan_perplexity,
    "compare": plan_compare,
    "rlhf": plan_rlhf,
    "gaussian": plan_gaussian,
    "reference": plan_reference,
}


def plan(command: str, *operands, **options) -> Plan:
    """The plan of ``klcli COMMAND OPERANDS --OPTIONS``; option combinations are checked here."""
    try:
        planner = PLANNERS[command]
    except KeyError:
        raise UsageError(f"no command {command!r}; use one of {', '.join(PLANNERS)}") from None
    from klcli.rownames import named_by_shard

    made = planner(*operands, **options)
    # Rows of a sharded operand are also named by their shard (argmax_shard …), here, once for every command.
    return replace(made, compute=named_by_shard(made.compute, made.operands), arguments=operands,
                   options=portable(options))


def portable(options: dict) -> dict:
    """Options as plain values (enum members as their values, tuples as lists): what a partial file records."""
    def plain(value):
        value = _value(value)
        return list(value) if isinstance(value, tuple) else value

    return {name: plain(value) for name, value in options.items()}


# --- in pieces (klcli.pieces) ----------------------------------------------------------------------------------

ENGINES = ("local", "dask")


def merged_piece(planned: Plan, progress=None, *, jobs: int = 1, engine="local", scheduler: str | None = None,
                 piece: str | None = None):
    """The merged :class:`~klcli.pieces.Piece` of a plan: every row, or ``piece`` K/N only; in ``jobs`` worker
    processes, or on Dask."""
    from klcli import pieces

    engine = one_of("--engine", engine, ENGINES)
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: use 1 or more worker processes")
    if planned.split is None:
        what = f"{planned.command} --samples" if planned.options.get("samples") else planned.command
        raise UsageError(f"{what} runs in one process only: --jobs, --partial and --engine dask go with kl, xent, "
                         "js, perplexity and compare over distributions")
    if scheduler is not None and engine != "dask":
        raise UsageError("--scheduler goes with --engine dask")
    arguments = (planned.command, list(planned.arguments), planned.options)
    if piece is not None:
        if jobs > 1 or engine == "dask":
            raise UsageError("--piece K/N computes one piece here; give it without --jobs and --engine dask")
        return planned.split.map(pieces.one_piece(planned.split, piece), progress)
    if engine == "dask":
        return pieces.run_dask(*arguments, planned.split, scheduler)
    if jobs > 1:
        return pieces.run_jobs(*arguments, planned.split, jobs)
    return planned.split.map(None, progress)


def compute(planned: Plan, progress=None, *, jobs: int = 1, engine="local", scheduler: str | None = None) -> Result:
    """The plan's Result: in this process, or its pieces in ``jobs`` processes or on Dask, merged and finished."""
    if jobs == 1 and _value(engine) == "local" and scheduler is None:
        return planned.compute(progress)
    from klcli.io.shards import recording
    from klcli.rownames import name_rows

    with recording() as opened:  # the sharded operands, as this process opens them to divide the rows
        merged = merged_piece(planned, progress, jobs=jobs, engine=engine, scheduler=scheduler)
        if not opened and planned.split is not None:
            planned.split.layout()
    result = planned.split.finish(merged) if planned.split is not None else merged
    return name_rows(result, opened, planned.operands) if opened else result


# --- from Python -----------------------------------------------------------------------------------------------


def run(command: str, *operands, base="e", bits: bool = False, per_row: bool = False, check=None, jobs: int = 1,
        **options) -> dict:
    """Run a klcli command from Python; the dictionary ``klcli COMMAND … --json`` prints.

    Parameters
    ----------
    command : str
        ``kl``, ``xent``, ``js``, ``entropy``, ``perplexity``, ``compare``, ``rlhf``, ``gaussian`` or ``reference``
        (which writes its ``output=`` file and returns its report).
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
    jobs : int
        Worker processes, each computing a piece of the rows (``--jobs``); the same document as ``jobs=1``.

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
    if command == "rlhf":
        options["per_row"] = per_row
    planned = plan(command, *operands, **options)
    return _document(lambda: compute(planned, jobs=jobs), base, bits, per_row, check, planned)


def _document(result: Callable[[], Result], base, bits: bool, per_row: bool, check,
              planned: Plan | None = None) -> dict:
    """The JSON document of ``result()``; a plan's further reports (compare's ``--html``) checked, then written."""
    from klcli.output import Delivery

    delivery = Delivery.from_options(fmt=None, json_flag=True, per_row=per_row, quiet=False, output=None,
                                     check=list(check) if check else None, no_progress=True, base=_base_text(base),
                                     bits=bits)
    reports = planned.reports if planned is not None else ()
    if planned is not None:
        delivery.check_reports(planned.operands, reports)
    _, document = delivery.report(result())
    delivery.write_reports(reports, document)
    return json_safe(document)


def save_partial(planned: Plan, path: str, *, protected: list | tuple = (), jobs: int = 1, engine="local",
                 scheduler: str | None = None, piece: str | None = None) -> None:
    """Write the plan's exact partial (of every row, or of ``piece`` K/N) to ``path``, atomically, never over an
    input."""
    from klcli.io.output import check_output_path
    from klcli.io.partial_file import encode, write_partial

    check_output_path(path, [o for o in planned.operands if isinstance(o, str)] + list(protected))
    merged = merged_piece(planned, None, jobs=jobs, engine=engine, scheduler=scheduler, piece=piece)
    total = planned.split.layout().total if piece is not None else None
    total = merged.partial.stop if total is None else total
    write_partial(path, encode(planned.command, list(planned.arguments), planned.options, merged, total=total))


def write_partial(path: str, command: str, *operands, piece: str | None = None, jobs: int = 1, **options) -> None:
    """``klcli COMMAND … --partial PATH [--piece K/N]`` from Python: the exact partial, for :func:`merge`.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> parts = [os.path.join(folder, f"part-{k}.klp") for k in (1, 2)]
    >>> for k, part in enumerate(parts, 1):
    ...     write_partial(part, "kl", "0.5,0.5;0.9,0.1", "0.9,0.1", piece=f"{k}/2")
    >>> merge(*parts)["value"] == run("kl", "0.5,0.5;0.9,0.1", "0.9,0.1")["value"]
    True
    """
    save_partial(plan(command, *operands, **options), path, jobs=jobs, piece=piece)


def merge(*parts: str, base="e", bits: bool = False, per_row: bool = False, check=None) -> dict:
    """``klcli merge PART…`` from Python: the dictionary one run over every row of the partials' inputs returns."""
    from klcli.merging import merge_partials

    return _document(lambda: merge_partials(list(parts)), base, bits, per_row, check)


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
    ``labels``, ``behavior``, ``per_token``, ``per_row`` …).
    """
    return run("rlhf", policy, ref, **options)
