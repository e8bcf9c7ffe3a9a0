"""The command line: one small function per subcommand, and the error boundary.

Nothing here computes. Each command turns its options into a reading and a
delivery, calls its function in :mod:`klcli.commands`, and delivers the result.
:func:`main` is the only place errors become ``klcli: error: …`` and exit codes.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Annotated, Optional

import typer

try:  # Typer's own usage errors (bad option, missing argument): TyperException from Typer 0.28 on
    from typer import TyperException as _TyperError
except ImportError:  # Typer 0.26, 0.27: the ClickException of the Click it vendors (0.28 derives it from the above)
    from typer._click.exceptions import ClickException as _TyperError

from klcli import __version__
from klcli.errors import KlcliError, UsageError
from klcli.options import (
    BaseOpt,
    BitsOpt,
    CheckOpt,
    Direction,
    EpsilonOpt,
    FormatOpt,
    IgnoreIndexOpt,
    JsonOpt,
    Kind,
    KindOpt,
    LabelsOpt,
    LogitsOpt,
    NoProgressOpt,
    NormalizeOpt,
    OutputOpt,
    PerRowOpt,
    PKindOpt,
    PrecisionOpt,
    QKindOpt,
    QuietOpt,
    ShiftOpt,
    TailOpt,
    TemperatureOpt,
    ThreadsOpt,
)

app = typer.Typer(
    name="klcli",
    help="Information theory over distributions and model outputs: KL, cross-entropy, JS, perplexity, drift.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

P_ARG = Annotated[str, typer.Argument(metavar="P", help="The first distribution(s): a file, FILE:SELECTOR, "
                                      "'-' for standard input, or inline numbers such as 0.1,0.9.",
                                      show_default=False)]
Q_ARG = Annotated[str, typer.Argument(metavar="Q", help="The second distribution(s), in the same forms; a single "
                                      "row is compared with every row of P.", show_default=False)]


def _version(value: bool) -> None:
    if value:
        print(f"klcli {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """klcli: KL divergence, cross-entropy, entropy, Jensen–Shannon and more, from files or inline numbers.

    Exit status: 0 computed and every --check passed; 1 a check failed; 2 usage or input error; 130 interrupted.
    """


def _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads=0, precision="precise"):
    from klcli.commands.common import Reading

    if logits and kind not in (None, Kind.logits):
        raise UsageError(f"--logits and --kind {kind.value} disagree; give one of them")
    if not temperature > 0:
        raise UsageError(f"--temperature {temperature:g}: the temperature must be > 0")
    both = Kind.logits if logits else kind
    return Reading(
        p_kind=(p_kind or both or Kind.probs).value,
        q_kind=(q_kind or both or Kind.probs).value,
        temperature=temperature,
        normalize=normalize,
        epsilon=epsilon,
        threads=threads,
        precision=_one_of("--precision", precision, ("precise", "fast")),
    )


def _one_of(option: str, value: str, choices: tuple[str, ...]) -> str:
    """A string option's value, if it is one of ``choices`` (Typer's own enum error names no fix)."""
    if value not in choices:
        raise UsageError(f"{option} {value!r}: use {' or '.join(choices)}")
    return value


def _tail(text: str) -> str:
    return _one_of("--tail", text, ("bucket", "renormalize"))


# The output options every command takes, added to its signature by @delivered: (annotation, default).
_OUTPUT_OPTIONS = {
    "base": (BaseOpt, "e"),
    "bits": (BitsOpt, False),
    "fmt": (FormatOpt, None),
    "json_flag": (JsonOpt, False),
    "per_row": (PerRowOpt, False),
    "quiet": (QuietOpt, False),
    "output": (OutputOpt, None),
    "check": (CheckOpt, None),
    "no_progress": (NoProgressOpt, False),
}


def delivered(command):
    """Give a command the shared output options; it receives them validated, as one ``delivery``.

    Typer reads a command's options from its signature, so the wrapper's
    signature is the command's own (without ``delivery``) plus the output
    options, defined once above instead of in every command.
    """
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "delivery"]
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)
             for name, (annotation, default) in _OUTPUT_OPTIONS.items()]

    @functools.wraps(command)
    def with_delivery(**options):
        from klcli.output import Delivery

        delivery = Delivery.from_options(**{name: options.pop(name) for name in _OUTPUT_OPTIONS})
        return command(**options, delivery=delivery)

    parameters = own + added
    with_delivery.__signature__ = inspect.Signature(parameters)
    with_delivery.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_delivery


def _finish(delivery, compute, operands: list[str]) -> None:
    """Run ``compute(progress)`` and deliver its result; exit with the checks' verdict."""
    delivery.check_target(operands)  # before the work, not after it
    progress = delivery.progress_bar()
    try:
        result = compute(progress)
    finally:
        progress.close()
    raise typer.Exit(delivery.deliver(result))


@app.command("kl")
@delivered
def kl_command(
    p: P_ARG,
    q: Q_ARG,
    direction: Annotated[Direction, typer.Option(
        "--direction", help="forward D(P‖Q); reverse D(Q‖P); both adds D(Q‖P) and the symmetric sum.")
    ] = Direction.forward,
    t2_scale: Annotated[bool, typer.Option(
        "--t2-scale", help="Multiply by T² (with --temperature T), as Hinton et al.'s distillation loss does.")
    ] = False,
    precision: PrecisionOpt = "precise",
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    tail: TailOpt = "bucket",
    delivery=None,
) -> None:
    """Kullback–Leibler divergence D(P‖Q) = Σ p·log(p/q), row by row; the headline is the mean over rows.

    Examples:

      klcli kl 0.5,0.5 0.9,0.1 -q

      klcli kl sample_data/teacher_logits.npy sample_data/student_logits.npy --logits --check 'p99<0.5'
    """
    from klcli.commands import divergence

    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads, precision)
    _finish(delivery, lambda progress: divergence.kl(p, q, reading, delivery.unit, direction=direction.value,
                                                     progress=progress, tail=_tail(tail), t2_scale=t2_scale), [p, q])


@app.command("xent")
@delivered
def xent_command(
    p: P_ARG,
    q: Annotated[Optional[str], typer.Argument(metavar="[Q]", help="The second distribution(s); omit it with "
                                               "--labels, where P holds logits.", show_default=False)] = None,
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    shift: ShiftOpt = False,
    label_smoothing: Annotated[float, typer.Option(
        "--label-smoothing", metavar="EPS", min=0.0, max=1.0, help="With --labels: PyTorch's label smoothing, "
        "(1−EPS)·NLL + EPS·mean over the vocabulary of −log p.", rich_help_panel="Tokens and labels")] = 0.0,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    precision: PrecisionOpt = "precise",
    tail: TailOpt = "bucket",
    delivery=None,
) -> None:
    """Cross-entropy H(P,Q) = −Σ p·log q, entropy H(P) and D(P‖Q), row by row; the headline is mean H(P,Q).

    With --labels, P holds logits and the figure is the token cross-entropy of the labels, equal to PyTorch's
    cross_entropy(logits, labels, ignore_index=…, label_smoothing=…).

    Examples:

      klcli xent 0.5,0.5 0.25,0.75

      klcli xent sample_data/p.csv sample_data/q.csv --bits --json

      klcli xent sample_data/lm_logits.npy --labels sample_data/lm_labels.npy -q
    """
    if labels is not None:
        from klcli.commands import perplexity

        if q is not None:
            raise UsageError("give Q or --labels, not both: with --labels, P holds logits scored against the labels")
        if kind not in (None, Kind.logits) or p_kind not in (None, Kind.logits):
            raise UsageError("--labels scores logits; for per-token log-probabilities use klcli perplexity")
        reading = _token_reading("logits", labels, ignore_index, shift, temperature, label_smoothing=label_smoothing,
                                 threads=threads, precision=precision)
        _finish(delivery, lambda progress: perplexity.token_cross_entropy(p, reading, delivery.unit,
                                                                         progress=progress), [p, labels])
    if q is None:
        raise UsageError("xent needs Q, or --labels IDS to score logits P against observed tokens")
    if _one_of("--precision", precision, ("precise", "fast")) == "fast":
        raise UsageError("--precision fast: xent has a float32 kernel only with --labels; between two "
                         "distributions use the default precision (or kl --precision fast for D(P‖Q))")
    from klcli.commands import divergence

    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads)
    _finish(delivery, lambda progress: divergence.xent(p, q, reading, delivery.unit, progress=progress,
                                                       tail=_tail(tail)), [p, q])


@app.command("js")
@delivered
def js_command(
    p: P_ARG,
    q: Q_ARG,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="A,B", help="Weights π1,π2 (≥ 0, summing to 1) of the generalised JSD "
        "π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q; β,1−β is the GKD distillation loss. [default: 0.5,0.5]",
        show_default=False)] = None,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    p_kind: PKindOpt = None,
    q_kind: QKindOpt = None,
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    tail: TailOpt = "bucket",
    delivery=None,
) -> None:
    """Jensen–Shannon divergence (at most log 2) and distance √JSD, row by row; the headline is the mean JSD.

    Examples:

      klcli js 1,0 0,1 --bits -q

      klcli js sample_data/p.parquet sample_data/q.parquet --per-row --format csv
    """
    from klcli.commands import divergence

    pair = divergence.parse_weights(weights)
    reading = _reading(kind, logits, p_kind, q_kind, normalize, epsilon, temperature, threads)
    _finish(delivery, lambda progress: divergence.js(p, q, reading, delivery.unit, weights=pair,
                                                     progress=progress, tail=_tail(tail)), [p, q])


@app.command("perplexity")
@delivered
def perplexity_command(
    scores: Annotated[str, typer.Argument(metavar="LOGITS|LOGPROBS", help="Logits of shape (N, V) or (B, T, V) "
                                          "with --labels; or, with --kind logprobs|probs, the observed tokens' "
                                          "log-probabilities (1-D, FILE:COLUMN, or 2-D padded with NaN).",
                                          show_default=False)],
    labels: LabelsOpt = None,
    kind: Annotated[Kind, typer.Option(
        "--kind", help="logits (with --labels), or logprobs / probs of the observed tokens.")] = Kind.logits,
    ignore_index: IgnoreIndexOpt = -100,
    shift: ShiftOpt = False,
    group: Annotated[Optional[str], typer.Option(
        "--group", metavar="COLUMN", help="With a table's log-prob column (FILE:COLUMN): the column whose values "
        "split the rows into sequences (documents).", rich_help_panel="Tokens and labels",
        show_default=False)] = None,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    precision: PrecisionOpt = "precise",
    delivery=None,
) -> None:
    """Perplexity exp(mean NLL per token) from logits and labels, or from the tokens' log-probabilities.

    The headline is the corpus perplexity exp(Σ NLL / Σ tokens) — what llama.cpp and PyTorch report.
    mean_sequence_perplexity is the mean of the sequences' own perplexities (Hugging Face evaluate's
    mean_perplexity); --per-row lists each sequence's nll, perplexity and tokens. Perplexity is always exp of
    the NLL in nats; --base sets the unit of the NLL figures only.

    Examples:

      klcli perplexity sample_data/lm_logits.npy --labels sample_data/lm_labels.npy

      klcli perplexity sample_data/token_logprobs.csv:logprob --kind logprobs --group doc --check 'perplexity<50'
    """
    from klcli.commands import perplexity

    if group is not None and kind == Kind.logits:
        raise UsageError("--group goes with --kind logprobs or probs (per-token values in a table column)")
    reading = _token_reading(kind.value, labels, ignore_index, shift, temperature, group=group, threads=threads,
                             precision=precision)
    operands = [scores] + ([labels] if labels else [])
    _finish(delivery, lambda progress: perplexity.perplexity(scores, reading, delivery.unit, progress=progress),
            operands)


def _token_reading(kind, labels, ignore_index, shift, temperature, *, label_smoothing=0.0, group=None, threads=0,
                   precision="precise"):
    from klcli.commands.perplexity import TokenReading

    if not temperature > 0:
        raise UsageError(f"--temperature {temperature:g}: the temperature must be > 0")
    if shift and kind != "logits":
        raise UsageError("--shift aligns logits with the next token's label; it needs --kind logits and --labels")
    return TokenReading(kind=kind, labels=labels, ignore_index=ignore_index, shift=shift, temperature=temperature,
                        label_smoothing=label_smoothing, group=group, threads=threads,
                        precision=_one_of("--precision", precision, ("precise", "fast")))


@app.command("compare")
@delivered
def compare_command(
    base_model: Annotated[str, typer.Argument(metavar="BASE", help="The reference model's logits (rows = positions, "
                                              "last axis = vocabulary).", show_default=False)],
    test_model: Annotated[str, typer.Argument(metavar="TEST", help="The test model's logits for the same positions "
                                              "and vocabulary.", show_default=False)],
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    top_k: Annotated[int, typer.Option("--top-k", min=1, metavar="K",
                                       help="K of the top-k overlap |topk(base) ∩ topk(test)| / K.")] = 5,
    worst: Annotated[int, typer.Option("--worst", min=0, metavar="N",
                                       help="How many of the positions with the largest KL to list.")] = 10,
    kind: Annotated[Optional[Kind], typer.Option(
        "--kind", help="What both inputs hold: logits, logprobs or probs. [default: logits]",
        rich_help_panel="Reading the inputs", show_default=False)] = None,
    base_kind: Annotated[Optional[Kind], typer.Option(
        "--base-kind", help="The kind of BASE alone.", rich_help_panel="Reading the inputs",
        show_default=False)] = None,
    test_kind: Annotated[Optional[Kind], typer.Option(
        "--test-kind", help="The kind of TEST alone.", rich_help_panel="Reading the inputs",
        show_default=False)] = None,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    tail: TailOpt = "bucket",
    delivery=None,
) -> None:
    """A drift report between two models' outputs at the same positions; the headline is mean D(base‖test).

    Per position: KL both ways, JS divergence, total variation, top-1 agreement and top-k overlap; with
    --labels, each model's perplexity, their ratio, and Δp = p_test(label) − p_base(label) — the statistics of
    llama.cpp's --kl-divergence, for any framework's logits, as JSON with gates.

    Examples:

      klcli compare sample_data/teacher_logits.npy sample_data/student_logits.npy

      klcli compare base.npy quant.npy --labels ids.npy --check 'kl.p99<0.2' --check 'top1_agreement>=0.98'
    """
    from klcli.commands import compare

    both = kind or Kind.logits
    reading = _reading(None, False, base_kind or both, test_kind or both, False, 0.0, temperature, threads)
    operands = [base_model, test_model] + ([labels] if labels else [])
    _finish(delivery, lambda progress: compare.compare(base_model, test_model, reading, delivery.unit, labels=labels,
                                                       top_k=top_k, worst=worst, ignore_index=ignore_index,
                                                       progress=progress, tail=_tail(tail)), operands)


@app.command("rlhf")
@delivered
def rlhf_command(
    policy: Annotated[Optional[str], typer.Argument(
        metavar="[POLICY]", help="The sampled tokens' log-probabilities under the policy π: 1-D, 2-D padded with NaN "
        "(one row per sequence), or FILE:COLUMN with --group. Omit POLICY and REF to read them off --policy-logits "
        "and --ref-logits at --labels.", show_default=False)] = None,
    ref: Annotated[Optional[str], typer.Argument(
        metavar="[REF]", help="The same tokens' log-probabilities under the reference π_ref, in the same shape.",
        show_default=False)] = None,
    estimator: Annotated[str, typer.Option(
        "--estimator", metavar="k1|k2|k3|all", help="Which estimator to report (all: side by side); the objective "
        "uses it, or k3 with all.")] = "all",
    group: Annotated[Optional[str], typer.Option(
        "--group", metavar="COLUMN", help="With table columns: the column whose values split the rows into "
        "sequences.", show_default=False)] = None,
    reward: Annotated[Optional[str], typer.Option(
        "--reward", metavar="R", help="One reward per sequence (a number, inline values or a file): adds the "
        "objective R − β·KL.", show_default=False)] = None,
    beta: Annotated[float, typer.Option("--beta", metavar="B", help="The KL coefficient β of the objective.")] = 0.1,
    policy_logits: Annotated[Optional[str], typer.Option(
        "--policy-logits", metavar="FILE", help="The policy's logits at the same positions, for the exact KL over "
        "the vocabulary.", show_default=False)] = None,
    ref_logits: Annotated[Optional[str], typer.Option(
        "--ref-logits", metavar="FILE", help="The reference's logits at the same positions.",
        show_default=False)] = None,
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    threads: ThreadsOpt = 0,
    delivery=None,
) -> None:
    """RLHF's KL penalty: per-sequence KL(π‖π_ref) from sampled tokens (k1, k2, k3), the objective, the exact KL.

    With log r = log π_ref − log π per sampled token: k1 = −log r (unbiased, can be negative), k2 = ½(log r)²
    (biased, ≥ 0), k3 = (r − 1) − log r (unbiased, ≥ 0), summed per sequence (Schulman, 2020). The headline is the
    mean per-sequence k3.

    Examples:

      klcli rlhf sample_data/rlhf.npz:policy sample_data/rlhf.npz:ref

      klcli rlhf sample_data/rlhf.npz:policy sample_data/rlhf.npz:ref --reward sample_data/rlhf.npz:reward

      klcli rlhf policy.npy ref.npy --policy-logits policy_logits.npy --ref-logits ref_logits.npy --per-row
    """
    from klcli.commands import rlhf

    if estimator not in ("k1", "k2", "k3", "all"):
        raise UsageError(f"--estimator {estimator!r}: use k1, k2, k3 or all")
    operands = [o for o in (policy, ref, policy_logits, ref_logits, labels) if o]
    _finish(delivery, lambda progress: rlhf.rlhf(policy, ref, delivery.unit, estimator=estimator, group=group,
                                                 reward=reward, beta=beta, policy_logits=policy_logits,
                                                 ref_logits=ref_logits, labels=labels, ignore_index=ignore_index,
                                                 per_row=delivery.per_row, threads=threads),
            operands)


def _parameter(option: str, meaning: str):
    return Annotated[Optional[str], typer.Option(option, metavar="X", help=meaning, show_default=False,
                                                 rich_help_panel="Gaussian parameters (numbers, vectors or files)")]


@app.command("gaussian")
@delivered
def gaussian_command(
    params: Annotated[Optional[str], typer.Argument(
        metavar="[PARAMS]", help="A table with columns mu1, mu2 and one of sigma/var/logvar for each side: one "
        "univariate KL per row.", show_default=False)] = None,
    mu1: _parameter("--mu1", "Mean of P: a number, a vector of k (diagonal), or (n, k) rows. [default: 0]") = None,
    sigma1: _parameter("--sigma1", "Standard deviation(s) of P. [default: 1]") = None,
    var1: _parameter("--var1", "Variance(s) of P, instead of --sigma1.") = None,
    logvar1: _parameter("--logvar1", "Log-variance(s) of P, instead of --sigma1.") = None,
    cov1: _parameter("--cov1", "Covariance of P, (k, k) or (n, k, k) (.npy, .npz:key, CSV), for the full form.") = None,
    mu2: _parameter("--mu2", "Mean of Q. [default: 0]") = None,
    sigma2: _parameter("--sigma2", "Standard deviation(s) of Q. [default: 1]") = None,
    var2: _parameter("--var2", "Variance(s) of Q, instead of --sigma2.") = None,
    logvar2: _parameter("--logvar2", "Log-variance(s) of Q, instead of --sigma2.") = None,
    cov2: _parameter("--cov2", "Covariance of Q, (k, k) or (n, k, k), for the full form.") = None,
    vae: Annotated[bool, typer.Option("--vae", help="The VAE regulariser D(N(μ, diag e^logvar) ‖ N(0, I)) per row "
                                      "of --mu and --logvar.")] = False,
    mu: _parameter("--mu", "With --vae: the encoder means, (n, k).") = None,
    logvar: _parameter("--logvar", "With --vae: the encoder log-variances, (n, k).") = None,
    direction: Annotated[Direction, typer.Option(
        "--direction", help="forward D(P‖Q); reverse D(Q‖P); both adds D(Q‖P) and the symmetric sum.")
    ] = Direction.forward,
    delivery=None,
) -> None:
    """Closed-form KL divergence between Gaussians P = N(μ1, Σ1) and Q = N(μ2, Σ2); the headline is the mean over rows.

    A number is a univariate Gaussian, a vector of k a diagonal one (KL summed over the k dimensions), an
    (n, k) array n of them; --cov1/--cov2 give full covariances (computed through Cholesky factors), and may be
    mixed with diagonal ones. Unset means are 0 and unset spreads 1.

    Examples:

      klcli gaussian --mu1 0 --sigma1 1 --mu2 1 --sigma2 2 -q

      klcli gaussian sample_data/gaussians.csv --per-row

      klcli gaussian --vae --mu sample_data/vae.npz:mu --logvar sample_data/vae.npz:logvar
    """
    from klcli.commands import gaussian

    sides = {"--mu1": mu1, "--sigma1": sigma1, "--var1": var1, "--logvar1": logvar1, "--cov1": cov1,
             "--mu2": mu2, "--sigma2": sigma2, "--var2": var2, "--logvar2": logvar2, "--cov2": cov2}
    given = [option for option, value in sides.items() if value is not None]
    if vae:
        if given or params:
            raise UsageError(f"--vae takes --mu and --logvar only, not {(given or ['PARAMS'])[0]}")
        if mu is None or logvar is None:
            raise UsageError("--vae needs --mu MU and --logvar LOGVAR (the encoder's outputs, (n, k))")
        _finish(delivery, lambda progress: gaussian.vae(mu, logvar, delivery.unit), [mu, logvar])
    if mu is not None or logvar is not None:
        raise UsageError("--mu and --logvar go with --vae; for two Gaussians use --mu1/--mu2 and --logvar1/--logvar2")
    if params is not None:
        if given:
            raise UsageError(f"give a PARAMS table or {given[0]} and the other parameter options, not both")
        _finish(delivery, lambda progress: gaussian.gaussian_table(params, delivery.unit, direction=direction.value),
                [params])
    first = gaussian.Side(1, mu1, sigma1, var1, logvar1, cov1)
    second = gaussian.Side(2, mu2, sigma2, var2, logvar2, cov2)
    _finish(delivery, lambda progress: gaussian.gaussian(first, second, delivery.unit, direction=direction.value),
            [v for v in sides.values() if v is not None])


def _error(message: str) -> None:
    lines = str(message).strip().splitlines() or ["unknown error"]
    print(f"klcli: error: {lines[0]}", file=sys.stderr)
    if len(lines) > 1:
        print(f"klcli: {' '.join(line.strip() for line in lines[1:])}", file=sys.stderr)


def _tune_process() -> None:
    """Settings for block-wise NumPy work, made before NumPy is imported.

    klcli runs its own threads over blocks of rows; BLAS threads on top of them
    only spin and steal the cores (``np.vecdot`` calls BLAS), so BLAS gets one
    thread unless the user chose otherwise. And glibc hands each multi-MiB
    temporary back to the kernel when freed, so every block would page-fault
    its buffers in anew; keeping them in the heap (mallopt) avoids that.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap
            libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MiB of freed heap
        except (OSError, AttributeError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run klcli; return the exit code (SPEC §5). Tracebacks only with ``KLCLI_DEBUG=1``."""
    _tune_process()
    debug = os.environ.get("KLCLI_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="klcli", standalone_mode=False)
        if code == 130:  # Typer turns Ctrl-C into a silent exit 130
            print("klcli: interrupted", file=sys.stderr)
        return code if isinstance(code, int) else 0
    except typer.Exit as done:
        return done.exit_code
    except KlcliError as exc:
        if debug:
            raise
        _error(str(exc))
        return exc.exit_code
    except _TyperError as exc:  # Typer's own usage errors: bad option, missing argument
        if debug:
            raise
        message = exc.format_message().rstrip(".")
        if message:  # (no command at all has already printed the help)
            _error(f"{message} (see klcli --help)")
        return getattr(exc, "exit_code", 2) or 2
    except (KeyboardInterrupt, typer.Abort):
        print("klcli: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        from klcli.output import quiet_broken_pipe

        quiet_broken_pipe()
        return 0
    except MemoryError:
        _error("out of memory; the input is too large for this machine's memory")
        return 2
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (run with KLCLI_DEBUG=1 for the traceback, "
               "and please report it)")
        return 2


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
