"""The options several commands share, as ``Annotated`` types (one definition each)."""

from __future__ import annotations

import functools
import inspect
import math
from enum import Enum
from typing import Annotated, Optional

import typer


def finite(value: float | None) -> float | None:
    """A float option's callback: NaN and ±inf are usage errors (``min=`` and ``> 0`` checks let NaN through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value!r} is not a finite number")
    return value

READING = "Reading the inputs"
OUTPUT = "Output"
GATES = "CI gates"
SCALING = "Scaling out"


class Kind(str, Enum):
    probs = "probs"
    logprobs = "logprobs"
    logits = "logits"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


class Engine(str, Enum):
    local = "local"
    dask = "dask"


class Direction(str, Enum):
    forward = "forward"
    reverse = "reverse"
    both = "both"


# --- reading ---------------------------------------------------------------

KindOpt = Annotated[Optional[Kind], typer.Option(
    "--kind", help="What the values are, for both inputs: probs, logprobs or logits. [default: probs]",
    rich_help_panel=READING, show_default=False)]
LogitsOpt = Annotated[bool, typer.Option(
    "--logits", help="Short for --kind logits.", rich_help_panel=READING)]
PKindOpt = Annotated[Optional[Kind], typer.Option(
    "--p-kind", help="The kind of P alone (overrides --kind).", rich_help_panel=READING, show_default=False)]
QKindOpt = Annotated[Optional[Kind], typer.Option(
    "--q-kind", help="The kind of Q alone (overrides --kind).", rich_help_panel=READING, show_default=False)]
NormalizeOpt = Annotated[bool, typer.Option(
    "--normalize", help="Rescale each row to sum 1 (counts, weights) instead of requiring it.",
    rich_help_panel=READING)]
EpsilonOpt = Annotated[float, typer.Option(
    "--epsilon", min=0.0, metavar="E", callback=finite,
    help="Add E to every probability of P and Q, then renormalise (keeps KL finite where Q has zeros).",
    rich_help_panel=READING)]
TemperatureOpt = Annotated[float, typer.Option(
    "--temperature", "-T", metavar="T", callback=finite,
    help="Divide log-probabilities (logits) by T > 0 before normalising, as in distillation.",
    rich_help_panel=READING)]

TailOpt = Annotated[str, typer.Option(
    "--tail", metavar="bucket|renormalize", help="For two OpenAI-style logprobs files (top-k lists): put the mass "
    "outside the shared tokens in one tail bucket (a lower bound on the divergence), or renormalise over the shared "
    "tokens.", rich_help_panel=READING)]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", min=0, metavar="N", help="Threads computing blocks of rows; 0 means every core available to the "
    "process, and more than that is capped at it (with a note). Results are identical for every N.",
    rich_help_panel=READING)]

PrecisionOpt = Annotated[str, typer.Option(
    "--precision", metavar="precise|fast", help="precise: float64 arithmetic, every figure within 1e-9 of the "
    "float64 computation. fast: float32 arithmetic on float32 or float16 logits, for throughput "
    "(kl, js, and compare's KL both ways, JS and TV: each row within 1e-5 relative of its divergence, typically "
    "1e-7, rows where that cannot be assured recomputed precisely; "
    "perplexity and xent --labels: each token's loss within about 1e-5 nats, typically 3e-7).",
    rich_help_panel=READING)]

# --- tokens (perplexity, xent --labels) ------------------------------------

TOKENS = "Tokens and labels"
LabelsOpt = Annotated[Optional[str], typer.Option(
    "--labels", metavar="IDS", help="The observed token ids: shape (N) or (B, T) matching the logits' leading axes "
    "(.npy, FILE:COLUMN, a glob or directory of shards, inline).", rich_help_panel=TOKENS, show_default=False)]
IgnoreIndexOpt = Annotated[int, typer.Option(
    "--ignore-index", metavar="ID", help="Label value of positions not scored (PyTorch's convention).",
    rich_help_panel=TOKENS)]
ShiftOpt = Annotated[bool, typer.Option(
    "--shift", help="Causal-LM dumps: position t predicts token t+1 (logits[:, :-1] against labels[:, 1:], as "
    "Hugging Face computes the loss).", rich_help_panel=TOKENS)]

MaskOpt = Annotated[Optional[str], typer.Option(
    "--mask", metavar="FILE", help="Which positions to score: one 1/0 (or boolean) per position, shape (N) or "
    "(B, T) (.npy, FILE:COLUMN, shards, inline), e.g. an attention mask. With --labels, a 0 acts as --ignore-index on "
    "that position's label (labels AND mask).", rich_help_panel=TOKENS, show_default=False)]

# --- output ----------------------------------------------------------------

BaseOpt = Annotated[str, typer.Option(
    "--base", metavar="e|2|10|B", help="Logarithm base of every divergence and entropy: e (nats), 2 (bits), "
    "10 (bans) or any B > 0.", rich_help_panel=OUTPUT)]
BitsOpt = Annotated[bool, typer.Option("--bits", help="Short for --base 2.", rich_help_panel=OUTPUT)]
FormatOpt = Annotated[Optional[Format], typer.Option(
    "--format", "-f", help="table (for people), json (one object), csv or ndjson (per-row values, for "
    "pipelines). [default: table]", rich_help_panel=OUTPUT, show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Short for --format json.", rich_help_panel=OUTPUT)]
PerRowOpt = Annotated[bool, typer.Option(
    "--per-row", help="Also give every row's values (JSON key per_row; a table in table mode).",
    rich_help_panel=OUTPUT)]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print the headline value alone (shortest round-trip repr) and a newline.",
    rich_help_panel=OUTPUT)]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", metavar="FILE",
    help="Write the result to FILE (atomically; a device or pipe in place; - is standard output).",
    rich_help_panel=OUTPUT, show_default=False)]
NoProgressOpt = Annotated[bool, typer.Option(
    "--no-progress", help="No progress bar on standard error (it is shown only on a terminal, after ~1 s).",
    rich_help_panel=OUTPUT)]

# --- gates -----------------------------------------------------------------

CheckOpt = Annotated[Optional[list[str]], typer.Option(
    "--check", metavar="EXPR", help="Assert KEY OP NUMBER on the result, e.g. 'value<0.05' or 'p99<=0.2' "
    "(OP: < <= > >= == !=; KEY a dotted JSON path; a bare name means summary.NAME). Repeatable. "
    "A failed check exits 1.", rich_help_panel=GATES, show_default=False)]

# --- operands and per-command options used by more than one command --------

P_ARG = Annotated[str, typer.Argument(metavar="P", help="The first distribution(s): a file, FILE:SELECTOR, "
                                      "shards (a quoted glob such as 'p/part-*.npy', or a directory; rows "
                                      "concatenated in natural order), '-' for standard input, or inline numbers "
                                      "such as 0.1,0.9.",
                                      show_default=False)]
Q_ARG = Annotated[str, typer.Argument(metavar="Q", help="The second distribution(s), in the same forms; a single "
                                      "row is compared with every row of P.", show_default=False)]


DirectionOpt = Annotated[Direction, typer.Option(
    "--direction", help="forward D(P‖Q); reverse D(Q‖P); both adds D(Q‖P) and the symmetric sum.")]


def parameter(option: str, meaning: str):
    """A Gaussian parameter option, given as the parameter's default (``name: Optional[str] = parameter(…)``)."""
    return typer.Option(None, option, metavar="X", help=meaning, show_default=False,
                        rich_help_panel="Gaussian parameters (numbers, vectors or files)")



# perplexity's, xent's and rlhf's own
TokenKindOpt = Annotated[Optional[Kind], typer.Option(
    "--kind", help="logits (with --labels), or logprobs / probs of the observed tokens. [default: logits]",
    show_default=False)]
LabelSmoothingOpt = Annotated[float, typer.Option(
    "--label-smoothing", metavar="EPS", min=0.0, max=1.0, callback=finite,
    help="With --labels: PyTorch's label smoothing, (1−EPS)·NLL + EPS·mean over the vocabulary of −log p.",
    rich_help_panel=TOKENS)]
BetaOpt = Annotated[float, typer.Option("--beta", metavar="B", callback=finite,
                                        help="The KL coefficient β of the objective.")]

# k-NN estimates from samples (kl, entropy, gaussian --fit)
SAMPLES = "Continuous distributions from samples (k-NN)"
SamplesOpt = Annotated[bool, typer.Option(
    "--samples", help="P (and Q) are sample points, (n, d) arrays (1-D: d = 1), of continuous distributions: "
    "estimate by k nearest neighbours (kl: Wang-Kulkarni-Verdú 2009; entropy: Kozachenko-Leonenko), with a "
    "standard error from 10 disjoint random subsamples (fixed seed), spread/√10. Assumes i.i.d. samples of "
    "continuous densities; a point repeated (in P, or k times in Q) has distance 0 and is an error. Needs scipy, "
    "which the extra 'samples' of klcli installs.", rich_help_panel=SAMPLES)]
KOpt = Annotated[int, typer.Option(
    "--k", min=1, metavar="K", help="With --samples (gaussian: --knn): the neighbour used. Larger K lowers the "
    "variance but raises the bias (the density is taken as constant over a wider ball); 5 is a common middle.",
    rich_help_panel=SAMPLES)]

# compare's own
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, metavar="K",
                                      help="K of the top-k overlap |topk(base) ∩ topk(test)| / K.")]
WorstOpt = Annotated[int, typer.Option("--worst", min=0, metavar="N",
                                       help="How many of the positions with the largest KL to list.")]
CompareKindOpt = Annotated[Optional[Kind], typer.Option(
    "--kind", help="What both inputs hold: logits, logprobs or probs. [default: logits]",
    rich_help_panel=READING, show_default=False)]
BaseKindOpt = Annotated[Optional[Kind], typer.Option(
    "--base-kind", help="The kind of BASE alone.", rich_help_panel=READING, show_default=False)]
TestKindOpt = Annotated[Optional[Kind], typer.Option(
    "--test-kind", help="The kind of every TEST.", rich_help_panel=READING, show_default=False)]
NameOpt = Annotated[Optional[list[str]], typer.Option(
    "--name", metavar="LABEL", help="A candidate's name in the leaderboard, JSON and check messages; repeat once per "
    "TEST, in order, e.g. --name q8 --name q4. [default: the file names]", show_default=False)]
SortOpt = Annotated[str, typer.Option(
    "--sort", metavar="KEY", help="Rank the leaderboard by a candidate's figure, a dotted key as --check takes: "
    "kl.mean, kl.p99, kl.max, top1_agreement, ppl_ratio … (divergences ascending, agreements descending).")]
VocabSizeOpt = Annotated[Optional[int], typer.Option(
    "--vocab-size", metavar="N", min=1, help="Compare only the first N outcomes of each row, renormalised over them "
    "(a softmax of the first N logits): for logits padded past the tokenizer's vocabulary.", rich_help_panel=READING,
    show_default=False)]


# --- the scaling-out group (kl, xent, js, perplexity, compare) -------------

JobsOpt = Annotated[int, typer.Option(
    "--jobs", "-j", min=1, metavar="N", rich_help_panel=SCALING,
    help="Worker processes, each reading a piece of the rows (cut at sequence boundaries); the report is the one "
    "--jobs 1 prints.")]
EngineOpt = Annotated[Engine, typer.Option(
    "--engine", rich_help_panel=SCALING,
    help="local (this machine), or dask: one task per piece on a Dask cluster (pip install 'klcli[dask]').")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", metavar="ADDRESS", rich_help_panel=SCALING, show_default=False,
    help="With --engine dask: a scheduler's address (tcp://host:8786), or local:N for N worker processes here. "
    "Workers open the inputs by path: they must see the same files.")]
PartialOpt = Annotated[Optional[str], typer.Option(
    "--partial", metavar="FILE", rich_help_panel=SCALING, show_default=False,
    help="Write the exact partial result to FILE instead of a report; klcli merge FILE… prints the report.")]
PieceOpt = Annotated[Optional[str], typer.Option(
    "--piece", metavar="K/N", rich_help_panel=SCALING, show_default=False,
    help="With --partial: compute only the K-th of N pieces of the rows (one per CI job; then klcli merge). "
    "Sharded inputs are cut at their shards: N = the shard count computes shard K alone.")]

_SCALING_OPTIONS = {
    "jobs": (JobsOpt, 1),
    "engine": (EngineOpt, Engine.local),
    "scheduler": (SchedulerOpt, None),
    "partial": (PartialOpt, None),
    "piece": (PieceOpt, None),
}


def pieced(command):
    """Give a streaming command the scaling-out options; it receives them as one ``scaling`` dictionary."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    at = next(i for i, p in enumerate(own) if p.name == "delivery")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)
             for name, (annotation, default) in _SCALING_OPTIONS.items()]

    @functools.wraps(command)
    def with_scaling(**options):
        scaling = {name: options.pop(name) for name in _SCALING_OPTIONS}
        scaling["engine"] = getattr(scaling["engine"], "value", scaling["engine"])
        return command(**options, scaling=scaling)

    parameters = [p for p in own[:at] if p.name != "scaling"] + added + own[at:]
    with_scaling.__signature__ = inspect.Signature(parameters)
    with_scaling.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_scaling


# --- the output group ------------------------------------------------------

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


def delivered(command=None, *, omit: tuple[str, ...] = ()):
    """Give a command the shared output options; it receives them validated, as one ``delivery``.

    Typer reads a command's options from its signature, so the wrapper's
    signature is the command's own (without ``delivery``) plus the output
    options, defined once above instead of in every command. ``omit`` leaves
    some out (``reference`` has its own ``-o``: the file it writes), at their defaults.
    """
    if command is None:
        return functools.partial(delivered, omit=omit)
    shared = {name: spec for name, spec in _OUTPUT_OPTIONS.items() if name not in omit}
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "delivery"]
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)
             for name, (annotation, default) in shared.items()]

    @functools.wraps(command)
    def with_delivery(**options):
        from klcli.output import Delivery

        delivery = Delivery.from_options(**{name: options.pop(name) if name in shared else default
                                            for name, (_annotation, default) in _OUTPUT_OPTIONS.items()})
        delivery.protected = [value for value in options.values() if isinstance(value, str)]
        return command(**options, delivery=delivery)

    parameters = own + added
    with_delivery.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_delivery.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_delivery
