"""The command line: the Typer app, one small function per subcommand.

Nothing here computes or validates. Each command hands its options to its
planner in :mod:`klcli.runner` (where the option groups are checked, before any
file is read), runs the plan and delivers the result through the output group
(:class:`klcli.output.Delivery`). The error boundary and process tuning are in
:mod:`klcli.boundary`.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Optional

import typer

from klcli import __version__
from klcli.boundary import main, run  # noqa: F401  (the entry points, kept importable from here)
from klcli.options import OUTPUT as _OUTPUT
from klcli.options import (
    P_ARG,
    Q_ARG,
    SAMPLES,
    BaseKindOpt,
    BetaOpt,
    CompareKindOpt,
    Direction,
    DirectionOpt,
    EpsilonOpt,
    IgnoreIndexOpt,
    KindOpt,
    KOpt,
    LabelSmoothingOpt,
    LabelsOpt,
    LogitsOpt,
    MaskOpt,
    NameOpt,
    NormalizeOpt,
    PKindOpt,
    PrecisionOpt,
    QKindOpt,
    SamplesOpt,
    ShiftOpt,
    SortOpt,
    TailOpt,
    TemperatureOpt,
    TestKindOpt,
    ThreadsOpt,
    TokenKindOpt,
    TopKOpt,
    VocabSizeOpt,
    WorstOpt,
    delivered,
    parameter,
    pieced,
)

app = typer.Typer(
    name="klcli",
    help="Information theory over distributions and model outputs: KL, cross-entropy, JS, perplexity, drift.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


def _go(command: str, options: dict, *operand_names: str) -> None:
    """Plan ``command`` from its options (every check before any file is read), compute it, deliver it."""
    from klcli.runner import plan

    delivery = options.pop("delivery")
    scaling = options.pop("scaling", None) or {}
    operands = []
    for name in operand_names:  # a variadic argument (compare's TEST…) gives a list of operands
        value = options.pop(name)
        operands.extend(value) if isinstance(value, list) else operands.append(value)
    if command == "rlhf":
        options["per_row"] = delivery.per_row
    planned = plan(command, *operands, **options)
    delivery.check_target([o for o in planned.operands if isinstance(o, str)], planned.reports)  # before the work
    if scaling.get("partial") is not None or scaling.get("piece") is not None:
        raise typer.Exit(_write_partial(planned, delivery, scaling))
    progress = delivery.progress_bar()
    try:
        from klcli.runner import compute

        result = compute(planned, progress, jobs=scaling.get("jobs", 1), engine=scaling.get("engine", "local"),
                         scheduler=scaling.get("scheduler"))
    finally:
        progress.close()
    raise typer.Exit(delivery.deliver(result, planned.reports))


def _write_partial(planned, delivery, scaling: dict) -> int:
    """``--partial FILE`` (with ``--piece K/N``): the exact partial of the rows, written atomically; no report."""
    from klcli.errors import UsageError
    from klcli.runner import save_partial

    path = scaling.get("partial")
    if path is None:
        raise UsageError("--piece K/N goes with --partial FILE (the piece's partial, for klcli merge)")
    # What shapes the report, not the partial, is given to klcli merge: refused here rather than dropped.
    if delivery.checks:
        raise UsageError("--check goes with klcli merge, which prints the report of the merged partials")
    if delivery.unit.name != "nats":
        raise UsageError("--partial records nats; give --bits or --base to klcli merge, which prints the report")
    given = [option for option, asked in (("-o", delivery.output is not None), ("-q", delivery.quiet),
                                          ("--json/--format", delivery.format != "table"),
                                          ("--per-row", delivery.per_row)) if asked]
    if given:
        raise UsageError(f"{given[0]} shapes the report, which --partial does not print: give it to klcli merge")
    if planned.reports:
        raise UsageError(f"{planned.reports[0].option} is written from the report: give it to the run that prints "
                         "one (klcli merge prints the merged partials' report)")
    others = [option for option in delivery.protected if option not in (path, scaling.get("piece"))]
    with _named_partial():
        save_partial(planned, path, protected=others, jobs=scaling["jobs"], engine=scaling["engine"],
                     scheduler=scaling.get("scheduler"), piece=scaling.get("piece"))
    return 0


@contextlib.contextmanager
def _named_partial():
    """The output writer's errors (worded for -o) worded for --partial."""
    from klcli.errors import KlcliError

    try:
        yield
    except KlcliError as exc:
        if not exc.message.startswith("-o "):
            raise
        raise type(exc)("--partial " + exc.message[3:]) from None


@app.command("merge")
@delivered
def merge_command(
    parts: Annotated[list[str], typer.Argument(
        metavar="PART...", help="Partial files written by --partial (globs accepted, in any order).")],
    html: Annotated[Optional[str], typer.Option(
        "--html", metavar="FILE", show_default=False,
        help="For compare's partials: also write the self-contained HTML report of the merged result.")] = None,
    delivery=None,
) -> None:
    """Merge partial results (from --partial FILE) into the report one run over all their rows prints.

    The partials must come from one command with the same options and inputs, and their rows must tile without
    gaps or overlaps; --base, --json, --check and the other output options are chosen here.

    Examples:

      klcli kl sample_data/p.npy sample_data/q.npy --partial /tmp/klcli-part-1.klp --piece 1/2

      klcli kl sample_data/p.npy sample_data/q.npy --partial /tmp/klcli-part-2.klp --piece 2/2

      klcli merge '/tmp/klcli-part-*.klp' --check 'p99<5'
    """
    from klcli.errors import UsageError
    from klcli.merging import merge_partials
    from klcli.runner import Report

    reports: tuple[Report, ...] = ()
    if html is not None:
        from klcli import report_html

        if html in ("", "-"):
            raise UsageError(f"--html {html!r}: give a file name; standard output holds the table or JSON")
        reports = (Report("--html", html, report_html.html_report),)
        delivery.check_reports(parts, reports)
    result = merge_partials(parts)
    if reports and result.command != "compare":
        raise UsageError(f"--html is compare's report; these partials are klcli {result.command}'s")
    raise typer.Exit(delivery.deliver(result, reports))


@app.command("kl")
@delivered
@pieced
def kl_command(
    p: P_ARG,
    q: Q_ARG,
    direction: DirectionOpt = Direction.forward,
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
    samples: SamplesOpt = False,
    k: KOpt = 5,
    scaling=None,
    delivery=None,
) -> None:
    """Kullback–Leibler divergence D(P‖Q) = Σ p·log(p/q), row by row; the headline is the mean over rows.

    Examples:

      klcli kl 0.5,0.5 0.9,0.1 -q

      klcli kl sample_data/teacher_logits.npy sample_data/student_logits.npy --logits --check 'p99<0.5'

      klcli kl --samples embeddings_a.npy embeddings_b.npy --k 5 --json   (continuous P, Q known by samples)

      klcli kl sample_data/teacher_logits.npy sample_data/student_logits.npy --logits --jobs 2
    """
    _go("kl", locals(), "p", "q")

@app.command("xent")
@delivered
@pieced
def xent_command(
    p: P_ARG,
    q: Annotated[Optional[str], typer.Argument(metavar="[Q]", help="The second distribution(s); omit it with "
                                               "--labels, where P holds logits.", show_default=False)] = None,
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    shift: ShiftOpt = False,
    label_smoothing: LabelSmoothingOpt = 0.0,
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
    scaling=None,
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
    _go("xent", locals(), "p", "q")

@app.command("js")
@delivered
@pieced
def js_command(
    p: P_ARG,
    q: Q_ARG,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="A,B", help="Weights π1,π2 (≥ 0, summing to 1) of the generalised JSD "
        "π1·D(P‖M) + π2·D(Q‖M), M = π1·P + π2·Q; β,1−β is the GKD distillation loss. [default: 0.5,0.5]",
        show_default=False)] = None,
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
    scaling=None,
    delivery=None,
) -> None:
    """Jensen–Shannon divergence (at most log 2) and distance √JSD, row by row; the headline is the mean JSD.

    Examples:

      klcli js 1,0 0,1 --bits -q

      klcli js sample_data/p.parquet sample_data/q.parquet --per-row --format csv

      klcli js sample_data/teacher_logits.npy sample_data/student_logits.npy --logits --precision fast
    """
    _go("js", locals(), "p", "q")

@app.command("entropy")
@delivered
def entropy_command(
    p: P_ARG,
    by_leading: Annotated[int, typer.Option(
        "--by-leading", min=0, metavar="N", help="Summarise the entropy separately for each index of the first N "
        "leading axes (needs rank >= N+1; the axes between are each group's rows): JSON 'by', and a table.")] = 0,
    kind: KindOpt = None,
    logits: LogitsOpt = False,
    normalize: NormalizeOpt = False,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    samples: SamplesOpt = False,
    k: KOpt = 5,
    delivery=None,
) -> None:
    """Shannon entropy H(P) = −Σ p·log p, row by row; the headline is the mean over rows.

    Beside H (in --base units): normalized_entropy = H / log V (V outcomes; 0 to 1, the same in every base) and
    effective_support = exp(H in nats) (the number of equally likely outcomes with the same entropy); neither is
    scaled by --base. For attention maps of shape (layers, heads, T, T), --by-leading 2 gives each head's mean.

    Examples:

      klcli entropy 0.25,0.25,0.5 --bits -q

      klcli entropy sample_data/lm_logits.npy --logits --per-row --format csv

      klcli entropy attention.npy --by-leading 2 --json

      klcli entropy --samples activations.npy --k 5   (differential entropy of continuous samples)
    """
    _go("entropy", locals(), "p")

@app.command("perplexity")
@delivered
@pieced
def perplexity_command(
    scores: Annotated[str, typer.Argument(metavar="LOGITS|LOGPROBS", help="Logits of shape (N, V) or (B, T, V) "
                                          "(a file, or shards: a quoted glob or a directory) with --labels; or, "
                                          "with --kind logprobs|probs, the observed tokens' log-probabilities (1-D, "
                                          "FILE:COLUMN, or 2-D padded with NaN).",
                                          show_default=False)],
    labels: LabelsOpt = None,
    kind: TokenKindOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    shift: ShiftOpt = False,
    group: Annotated[Optional[str], typer.Option(
        "--group", metavar="COLUMN", help="With a table's log-prob column (FILE:COLUMN): the column whose values "
        "split the rows into sequences (documents).", rich_help_panel="Tokens and labels",
        show_default=False)] = None,
    bytes: Annotated[Optional[str], typer.Option(  # noqa: A002
        "--bytes", metavar="B", help="The scored text's UTF-8 byte count: one total, or one count per sequence "
        "(inline or a file). Adds bits_per_byte = Σ NLL / (Σ bytes · ln 2) and byte_perplexity = 2^bits_per_byte "
        "(lm-evaluation-harness's; in bits whatever --base says).", rich_help_panel="Tokens and labels",
        show_default=False)] = None,
    words: Annotated[Optional[str], typer.Option(
        "--words", metavar="W", help="The scored text's word count, given as --bytes is. Adds word_perplexity = "
        "exp(Σ NLL / Σ words).", rich_help_panel="Tokens and labels", show_default=False)] = None,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    precision: PrecisionOpt = "precise",
    scaling=None,
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

      klcli perplexity sample_data/lm_logits.npy --labels sample_data/lm_labels.npy --bytes 180 --words 40 --json
    """
    _go("perplexity", locals(), "scores")

@app.command("compare")
@delivered
@pieced
def compare_command(
    base_model: Annotated[str, typer.Argument(metavar="BASE", help="The reference model's logits (rows = positions, "
                                              "last axis = vocabulary): a file, or shards ('base/part-*.npy', a "
                                              "directory).", show_default=False)],
    test_models: Annotated[list[str], typer.Argument(
        metavar="TEST...", help="One or more candidates' logits for the same positions and vocabulary (each a file "
        "or shards, as BASE; they may be cut differently), each scored against BASE in the same pass.",
        show_default=False)],
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    mask: MaskOpt = None,
    shift: ShiftOpt = False,
    top_k: TopKOpt = 5,
    worst: WorstOpt = 10,
    name: NameOpt = None,
    sort: SortOpt = "kl.mean",
    kind: CompareKindOpt = None,
    base_kind: BaseKindOpt = None,
    test_kind: TestKindOpt = None,
    vocab_size: VocabSizeOpt = None,
    precision: PrecisionOpt = "precise",
    normalize: NormalizeOpt = False,
    epsilon: EpsilonOpt = 0.0,
    temperature: TemperatureOpt = 1.0,
    threads: ThreadsOpt = 0,
    tail: TailOpt = "bucket",
    # The report options: token ids shown as text, and the HTML report.
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", metavar="TOKENIZER_JSON", show_default=False,
        help="A Hugging Face tokenizer.json: the worst positions' token ids shown as text too (byte-level BPE "
             "markers as the spaces and newlines they stand for).")] = None,
    vocab: Annotated[Optional[str], typer.Option(
        "--vocab", metavar="FILE", show_default=False,
        help="A text file with one token per line (line n = id n), instead of --tokenizer.")] = None,
    html: Annotated[Optional[str], typer.Option(
        "--html", metavar="FILE", show_default=False,
        help="Also write a self-contained HTML report (no network, no scripts): leaderboard, KL histogram, KL by "
             "confidence and along the sequence, worst positions, every figure; written atomically like -o.")
    ] = None,
    scaling=None,
    delivery=None,
) -> None:
    """A drift report of one or more candidates against a base model at the same positions: a leaderboard.

    Per position: KL both ways, JS divergence, total variation, top-1 agreement and top-k overlap; with
    --labels, each model's perplexity ± stderr, their ratio and difference, label-in-top-k accuracy and
    Δp = p_test(label) − p_base(label) — the statistics of llama.cpp's --kl-divergence, for any framework's
    logits, as JSON with gates. BASE is read once; every TEST is scored in the same pass and ranked by mean KL
    (--sort). --check applies to every candidate. Positions whose label is --ignore-index, that --mask marks 0,
    or (with --shift) that end a sequence are left out of every statistic; rows (argmax, worst) are still
    numbered as in the input. The table ends its summary with a histogram of per-position KL (log-spaced bins,
    plain text); --html writes a self-contained page with the charts.

    Examples:

      klcli compare sample_data/teacher_logits.npy sample_data/student_logits.npy

      klcli compare base.npy quant.npy --labels ids.npy --check 'kl.p99<0.2' --check 'top1_agreement>=0.98'

      klcli compare base.npy q8.npy q4.npy --labels ids.npy --name q8 --name q4 --check 'kl.p99<0.2'

      klcli compare base.npy padded.npy --vocab-size 151669 --sort top1_agreement

      klcli compare base.npy quant.npy --labels ids.npy --tokenizer tokenizer.json --html report.html

      klcli compare 'sample_data/teacher_shards/part-*.npy' sample_data/student_logits.npy

      klcli compare base.npy quant.npy --precision fast   (float32 arithmetic, each row within 1e-5 relative)
    """
    _go("compare", locals(), "base_model", "test_models")


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
    beta: BetaOpt = 0.1,
    policy_logits: Annotated[Optional[str], typer.Option(
        "--policy-logits", metavar="FILE", help="The policy's logits at the same positions, for the exact KL over "
        "the vocabulary.", show_default=False)] = None,
    ref_logits: Annotated[Optional[str], typer.Option(
        "--ref-logits", metavar="FILE", help="The reference's logits at the same positions.",
        show_default=False)] = None,
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    behavior: Annotated[Optional[str], typer.Option(
        "--behavior", metavar="MU", help="The same tokens' log-probabilities under the behaviour policy μ that "
        "sampled them (an older policy, an inference engine), shaped as POLICY: each token's estimate is weighted "
        "by w = π/μ (not self-normalised); JSON effective_sample_size = (Σw)²/Σw².", show_default=False)] = None,
    per_token: Annotated[bool, typer.Option(
        "--per-token", help="Also the token-level mean of each estimator over every token (GRPO's convention), "
        "beside the per-sequence sums: JSON per_token.")] = False,
    threads: ThreadsOpt = 0,
    delivery=None,
) -> None:
    """RLHF's KL penalty: per-sequence KL(π‖π_ref) from sampled tokens (k1, k2, k3), the objective, the exact KL.

    With log r = log π_ref − log π per sampled token: k1 = −log r (unbiased, can be negative), k2 = ½(log r)²
    (biased, ≥ 0), k3 = (r − 1) − log r (unbiased, ≥ 0), summed per sequence (Schulman, 2020). The headline is the
    mean per-sequence k3. With --labels beside POLICY, REF and the logits, POLICY and REF must be
    the logits' log-softmax at the labels (within 1e-4 nats).

    Examples:

      klcli rlhf sample_data/rlhf.npz:policy sample_data/rlhf.npz:ref

      klcli rlhf sample_data/rlhf.npz:policy sample_data/rlhf.npz:ref --reward sample_data/rlhf.npz:reward

      klcli rlhf policy.npy ref.npy --policy-logits policy_logits.npy --ref-logits ref_logits.npy --per-row

      klcli rlhf policy.npy ref.npy --behavior sampler_logprobs.npy --per-token --json
    """
    _go("rlhf", locals(), "policy", "ref")

@app.command("gaussian")
@delivered
def gaussian_command(
    params: Annotated[Optional[str], typer.Argument(
        metavar="[PARAMS]", help="A table with columns mu1, mu2 and one of sigma/var/logvar for each side: one "
        "univariate KL per row.", show_default=False)] = None,
    mu1: Optional[str] = parameter("--mu1", "Mean of P: a number, a vector of k (diagonal), or (n, k) rows. "
                                   "[default: 0]"),
    sigma1: Optional[str] = parameter("--sigma1", "Standard deviation(s) of P. [default: 1]"),
    var1: Optional[str] = parameter("--var1", "Variance(s) of P, instead of --sigma1."),
    logvar1: Optional[str] = parameter("--logvar1", "Log-variance(s) of P, instead of --sigma1."),
    cov1: Optional[str] = parameter("--cov1", "Covariance of P, (k, k) or (n, k, k) (.npy, .npz:key, CSV), for the "
                                    "full form."),
    mu2: Optional[str] = parameter("--mu2", "Mean of Q. [default: 0]"),
    sigma2: Optional[str] = parameter("--sigma2", "Standard deviation(s) of Q. [default: 1]"),
    var2: Optional[str] = parameter("--var2", "Variance(s) of Q, instead of --sigma2."),
    logvar2: Optional[str] = parameter("--logvar2", "Log-variance(s) of Q, instead of --sigma2."),
    cov2: Optional[str] = parameter("--cov2", "Covariance of Q, (k, k) or (n, k, k), for the full form."),
    vae: Annotated[bool, typer.Option("--vae", help="The VAE regulariser D(N(μ, diag e^logvar) ‖ N(0, I)) per row "
                                      "of --mu and --logvar.")] = False,
    mu: Optional[str] = parameter("--mu", "With --vae: the encoder means, (n, k)."),
    logvar: Optional[str] = parameter("--logvar", "With --vae: the encoder log-variances, (n, k)."),
    fit: Annotated[Optional[tuple[str, str]], typer.Option(
        "--fit", metavar="P Q", help="Fit a Gaussian (sample mean and covariance, n − 1) to each of two sample "
        "sets, (n, d) and (m, d) points, and give the closed-form KL between the fits.", rich_help_panel=SAMPLES,
        show_default=False)] = None,
    diagonal: Annotated[bool, typer.Option(
        "--diagonal", help="With --fit: diagonal covariances (the variances alone).", rich_help_panel=SAMPLES)] = False,
    knn: Annotated[bool, typer.Option(
        "--knn", help="With --fit: the k-NN estimate of KL from the same samples beside it (as kl --samples), to "
        "show how non-Gaussian they are. Needs scipy.", rich_help_panel=SAMPLES)] = False,
    k: KOpt = 5,
    direction: DirectionOpt = Direction.forward,
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

      klcli gaussian --fit embeddings_a.npy embeddings_b.npy --knn --json
    """
    _go("gaussian", locals(), "params")



@app.command("reference")
@delivered(omit=("output",))
def reference_command(
    scores: Annotated[str, typer.Argument(metavar="LOGITS", help="The base model's logits, (N, V) or (B, T, V), in any "
                                          "format klcli reads (sharded, llama.cpp base files with their own tokens).",
                                          show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="REF", help="The reference file to write (safetensors), atomically; never one of "
        "the inputs.", rich_help_panel=_OUTPUT, show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", min=1, metavar="K", help="How many of each position's most probable tokens to keep (ties by "
        "lowest id); the rest of the mass is kept exactly as one tail.", show_default=False)] = None,
    labels: LabelsOpt = None,
    ignore_index: IgnoreIndexOpt = -100,
    kind: CompareKindOpt = None,
    temperature: TemperatureOpt = 1.0,
    dtype: Annotated[str, typer.Option(
        "--dtype", metavar="float32|float64", help="How the top-K log-probabilities are stored (the tail and the "
        "labels' log-probabilities are always float64).")] = "float32",
    threads: ThreadsOpt = 0,
    delivery=None,
) -> None:
    """Write a compact top-K reference of a base model's distributions; the headline is the mean tail mass.

    Per position: the K most probable token ids, their log-probabilities, the exact log of the rest of the mass
    and, with --labels (or a llama.cpp base file's own tokens), each label's log-probability. kl, js, xent,
    compare and perplexity accept the file wherever they take P or BASE: divergences are then lower bounds
    (over the K tokens and one tail bucket; exact when K = V), while top-1 agreement, top-k overlap (k <= K),
    the labels' NLL, perplexity and Δp are exact.

    Examples:

      klcli reference base_logits.npy --labels tokens.npy --top-k 64 -o base.ref.safetensors

      klcli compare sample_data/teacher.ref.safetensors sample_data/student_logits.npy --check 'top1_agreement>=0.8'

      klcli kl base.ref.safetensors test_logits.npy --q-kind logits --check 'p99<0.2'
    """
    _go("reference", locals(), "scores")
