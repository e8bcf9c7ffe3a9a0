"""The hand-written parts of the manual pages; :mod:`klcli.manpage` adds what the Typer app says.

Plain text; a blank line separates paragraphs, and a line starting with two
spaces is kept as an example line.
"""

OVERVIEW = """\
klcli computes the information theory of probability distributions and model outputs: \
Kullback-Leibler divergence, cross-entropy and entropy, Jensen-Shannon divergence, perplexity, \
closed-form KL between Gaussians, and a drift report between two models' logits. It reads \
distributions, log-probabilities or logits from files or inline numbers, computes in float64 log \
space, streams large files in bounded memory, and prints tables for people or JSON, CSV and NDJSON \
for programs. --check gates turn a result into an exit status for CI jobs.

Each command has its own page: klcli-kl(1), klcli-xent(1), klcli-js(1), klcli-perplexity(1), \
klcli-gaussian(1), klcli-compare(1), klcli-rlhf(1), klcli-entropy(1), klcli-reference(1), klcli-merge(1)."""

INPUT_FORMATS = """\
An operand is, in this order: - (standard input: CSV or TSV text, or .npy bytes recognised by their \
magic); an existing file; FILE:SELECTOR when FILE exists and the whole string does not (an .npz \
array key, or a table's column or comma-separated columns); shards: a quoted glob \
('logits/part-*.npy', '**' spanning folders) or a directory (DIR or DIR:SELECTOR; hidden files and \
_SUCCESS/_metadata sidecars skipped), one input whose rows are its files' rows concatenated in \
natural sort order (part-2 before part-10), every file of one format, shape and dtype, read one \
after the other; or inline numbers, where a comma \
separates outcomes and a semicolon rows (0.1,0.9;0.5,0.5). Inline numbers that begin with a minus \
sign go after --, with every option before it.

.npy files are read block by block, read only; arrays of Python objects (pickles) are refused, and a \
header is checked against the file's size before anything is allocated. .npz members are streamed \
from the archive. .csv and .tsv files are read by record batch; a first line with any non-numeric \
cell is a header. .parquet files and Arrow IPC files (.feather, .arrow, .ipc) are read by record \
batch; a table's rows are one list column or numeric columns. .safetensors files are read block by block \
(F64, F32, F16, BF16 widened exactly; FILE:TENSOR picks one). llama.cpp KL-divergence base files \
(llama-perplexity --kl-divergence-base) are recognised by their magic _logits_ whatever their name, \
decoded and used as llama.cpp uses them (not renormalised; base entries at or below -16 nats left \
out of the KL sum), and carry their own tokens as labels; llama.cpp stores every log-probability \
more than 16 nats below a row's top token as one code, so far-tail figures are approximate. \
.json and .jsonl files hold OpenAI-style logprobs (chat or legacy completions): \
perplexity reads the sampled tokens; kl, xent, js and compare align two such files by position over \
the tokens both list plus a tail bucket (--tail bucket, a lower bound) or renormalised over the \
shared tokens (--tail renormalize), and count sampled_token_mismatches. A klcli top-K reference \
file (written by klcli reference: safetensors whose metadata format is klcli-reference) is accepted \
wherever P or BASE is: divergences are then taken over its K stored tokens and one tail bucket, \
lower bounds of the full figures (exact when K = V), while top-1 agreement, top-k overlap (k <= K), \
the labels' NLL, perplexity and delta p are exact; its stored labels are used unless --labels is \
given. A file with another extension is recognised by its magic bytes or refused.

A 1-D array is one distribution; 2-D is rows by outcomes; higher ranks flatten their leading axes \
into rows. A single numeric column (FILE:COLUMN) is one distribution over the table's rows. Two \
inputs must have the same shape, or one of them a single row, which is compared with every row of \
the other."""

EXIT_STATUS = """\
0 when the figures were computed and every --check passed; 1 when they were computed and a check \
failed; 2 for a usage or input error (a bad option, a missing, unreadable or invalid file, a shape \
mismatch, an invalid distribution); 130 when interrupted. Errors are one line on standard error \
beginning klcli: error:, never a traceback (unless KLCLI_DEBUG=1)."""

COMMON_OUTPUT = """\
The default is a table on standard output. --json prints one strictly valid JSON object with the \
keys command, version, unit (nats, bits, bans or log-base-B), base, value (the headline), rows, \
inputs (role, operand, path, format, shape, dtype and kind of each), summary (count, mean, std, \
stderr, min, p0_1, p1, p5, p10, p25, median, p75, p90, p95, p99, p99_9, max, argmax), notes, checks (expr, \
key, op, actual, threshold, passed of each) and passed. An infinite value is the string "inf"; an \
undefined one (the spread of a single row) is null. --per-row adds per_row, an object of \
equal-length arrays by metric; --format csv and --format ndjson print the per-row values only, one \
line per row with a row column. -q prints the headline alone."""

OUTPUT = {
    "merge": "The report of the command whose partials are merged, exactly as one run of it over every row "
             "prints it: its keys, its table, its exit status.",
    "kl": "Per metric, a summary under its name: kl for D(P||Q), and with --direction reverse or both "
          "kl_reverse and kl_symmetric; direction says which. value is the mean forward divergence (the "
          "reverse one with --direction reverse). With --samples: value (the k-NN estimate), stderr, "
          "stderr_subsamples, estimator (wang-kulkarni-verdu), k, samples [n, m] and dimensions; the estimate "
          "assumes i.i.d. samples of continuous densities.",
    "xent": "Summaries cross_entropy, entropy and kl; value is the mean cross-entropy. With --labels: "
            "cross_entropy (over tokens), tokens, label_smoothing, and perplexity when no smoothing is applied.",
    "js": "Summaries js_divergence and js_distance, and weights; value is the mean JS divergence.",
    "entropy": "Summaries entropy (H, in --base units), normalized_entropy (H / log V, unit-free) and "
               "effective_support (exp of H in nats, unit-free); value is the mean entropy. With --by-leading N, "
               "by lists, per index of the N leading axes in row-major order, its index, count, mean, stderr, min "
               "and max of the entropy. With --samples: the differential entropy's k-NN estimate "
               "(kozachenko-leonenko), "
               "with stderr, stderr_subsamples, k, samples [n] and dimensions; it assumes i.i.d. samples of a "
               "continuous density.",
    "perplexity": "perplexity (the headline: exp of the mean NLL per token, in nats), nll (mean per token, in "
                  "--base units), nll_stderr, bits_per_token, tokens, sequences, mean_sequence_perplexity "
                  "(the mean of each sequence's own perplexity), and summary over the per-token NLL. "
                  "With --bytes: bytes, bits_per_byte and byte_perplexity; with --words: words and "
                  "word_perplexity (never scaled by --base). "
                  "per_row holds each sequence's nll, perplexity and tokens.",
    "gaussian": "kl (and kl_reverse, kl_symmetric with --direction), form (univariate, diagonal, full, vae, "
                "fit-full or fit-diagonal), dimensions and direction; with --fit, samples [n, m], and with --knn, "
                "knn (value, stderr, stderr_subsamples, estimator, k: the k-NN estimate, which assumes i.i.d. "
                "samples of continuous densities).",
    "rlhf": "estimators (k1, k2, k3 as chosen: mean and stderr over sequences, and per_sequence with --per-row), "
            "tokens, sequences; objective (mean, stderr, estimator, beta) with --reward; exact_kl (mean, stderr) with "
            "--policy-logits and --ref-logits; per_token (mean, stderr over tokens) with --per-token; "
            "effective_sample_size with --behavior; value is the mean per-sequence k3 and summary is over sequences.",
    "compare": "kl (D(base||test)), kl_reverse, js and tv summaries; vocab; top1_agreement, "
               "top1_agreement_stderr, top_k, topk_overlap; worst (row, kl, base_top1, test_top1 and label "
               "of the positions with the largest KL); with --labels also tokens, ppl_base, ppl_test, "
               "ppl_ratio, ln_ppl_ratio, ln_ppl_ratio_stderr, nll_correlation and a delta_p summary with rms. "
               "With a top-K reference BASE, reference (top_k, vocab, bound: lower, or exact when K = V).",
    "reference": "Writes REF, a safetensors file: tensors top_ids (I32, N x K), top_logprobs (F32 or F64), "
                 "tail_logprob (F64, the log of the mass outside the top K, a log-sum-exp of the rest), and with "
                 "labels labels (I64) and label_logprob (F64); __metadata__ format klcli-reference, version 1, "
                 "vocab, top_k, rows, shape, has_labels, ignore_index, temperature, source, klcli_version, "
                 "as_stored_below. The report's value is the mean tail mass (the probability outside the top K), "
                 "summary is over the positions' tail masses, and output, format, format_version, top_k, vocab, "
                 "has_labels, logprob_dtype, bytes, float32_bytes and compression describe the file.",
}

CHECKS = """\
--check KEY OP NUMBER asserts on the result; OP is one of < <= > >= == !=, and KEY a dotted path \
to a number in the JSON result (value, kl.p99, top1_agreement); a bare name that is not a top-level \
key means summary.NAME. An unknown key is a usage error that lists the keys available."""
