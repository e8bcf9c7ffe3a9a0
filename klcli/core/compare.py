"""Drift statistics between a base and a test model's distributions at the same positions.

Everything per position is computed from one log-ratio d = log(p_base/p_test)
per block, so the report costs little more than a KL pass. Top-1 and top-k
ties are broken by the lowest vocabulary index, as ``numpy.argmax`` does.
"""

from __future__ import annotations

import math

import numpy as np

from klcli.core.discrete import aligned, entropy_rows, expectation, js_rows, refined
from klcli.core.logspace import LogRows, log_ratio
from klcli.core.perplexity import perplexity_of


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's k largest entries' indices, largest first, ties by lowest index.

    Rather than partition or scan every row element by element, cut it into
    about 256 segments and take their maxima (one pass): the k-th largest
    segment maximum is a lower bound on the k-th largest entry, so only the
    few segments that reach it need a closer look. Of the segments whose
    maximum only ties it, the first k suffice (each holds a tied entry, and
    ties go to the lowest index), and of the entries that tie it the first k:
    rows of equal or mostly tied logits (padding, degenerate rows) cost
    what other rows do.

    Examples
    --------
    >>> top_k(np.array([[1.0, 3.0, 3.0, 2.0], [4.0, 0.0, 5.0, 5.0]]), 2).tolist()
    [[1, 2], [2, 3]]
    """
    rows, vocab = values.shape
    k = min(k, vocab)
    size = max(1, -(-vocab // 256))
    starts = np.arange(0, vocab, size)
    segment_max = np.maximum.reduceat(values, starts, axis=1)
    segments = starts.size
    if segments >= k:
        threshold = np.partition(segment_max, segments - k, axis=1)[:, segments - k]
    else:  # fewer segments than k (a tiny vocabulary): every entry is a candidate
        threshold = np.full(rows, -np.inf)
    tied = segment_max == threshold[:, None]
    needed = (segment_max > threshold[:, None]) | (tied & (np.cumsum(tied, axis=1) <= k))
    row, segment = np.nonzero(needed)
    column = segment[:, None] * size + np.arange(size)
    inside = column < vocab
    column = np.where(inside, column, vocab - 1)
    value = np.asarray(values[row[:, None], column], dtype=np.float64)
    at = threshold[row][:, None]
    ties = (inside & (value == at)).ravel()
    before = np.cumsum(ties) - ties  # tied entries before each one, counted from the first candidate
    first = np.searchsorted(row, row)  # each candidate segment's row's first candidate segment
    rank = before - before[first * column.shape[1]].repeat(column.shape[1])  # … within its row, in index order
    keep = inside & ((value > at) | (ties & (rank < k)).reshape(value.shape))
    row, column, value = np.broadcast_to(row[:, None], column.shape)[keep], column[keep], value[keep]
    order = np.lexsort((column, -value, row))
    row, column = row[order], column[order]
    rank = np.arange(row.size) - np.searchsorted(row, np.arange(rows))[row]
    return column[rank < k].reshape(rows, k)


class BaseSide:
    """The base model's block, prepared once for every candidate it is compared with.

    Its probabilities, entropy, top-k and top-1 probability are computed on
    first use and kept, so K candidates cost the base's share of the work once.
    ``top_size`` is the largest k any figure asks for (the top-k overlap, and
    with labels the label-in-top-k accuracies).
    """

    def __init__(self, rows: LogRows, top_size: int):
        self.rows = rows
        # A top-K reference (core.reference.ReferenceRows) holds its K most probable ids, most probable first,
        # as its first K outcomes: its top list is those ids (top_size at most K).
        self.reference = getattr(rows, "ids", None) is not None
        ids = getattr(rows, "ids", None)
        self.top = ids[:, :top_size] if ids is not None else top_k(rows.shifted, top_size)
        self._probs: np.ndarray | None = None
        self._entropy: np.ndarray | None = None

    def probs(self) -> np.ndarray:
        if self._probs is None:
            self._probs = self.rows.probs()
        return self._probs

    def entropy(self) -> np.ndarray:
        if self._entropy is None:
            self._entropy = entropy_rows(self.rows)
        return self._entropy

    def top1_probability(self) -> np.ndarray:
        """p_base(top-1 token) per row: the base's confidence."""
        if self.reference:  # its first stored outcome is its top-1 token
            return np.exp(self.rows.shifted[:, 0] - self.rows.offset)
        at = np.arange(self.rows.rows)
        return np.exp(self.rows.shifted[at, self.top[:, 0]] - self.rows.offset)


def position_stats(base: LogRows | BaseSide, test: LogRows, top_k_size: int, *,
                   test_top: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per position: both KL directions, JS, total variation, both argmaxes and the top-k overlap.

    ``base`` may be a :class:`BaseSide` shared by several candidates, and ``test_top`` the test's top list
    if the caller has it; either list may be longer than ``top_k_size`` (the overlap uses the first
    ``top_k_size`` entries, which a longer list of the same order begins with). A top-K reference base gives
    its stored ids as its top tokens and the divergences on its partition, the test mapped onto it.
    """
    side = base if isinstance(base, BaseSide) else BaseSide(base, top_k_size)
    base_rows = side.rows
    size = min(top_k_size, test.shifted.shape[1], side.top.shape[1])
    test_top = (top_k(test.shifted, top_k_size) if test_top is None else test_top)
    if side.reference:  # (the test's top list is over its full vocabulary, read above)
        base_rows, test = aligned(base_rows, test)
    d = log_ratio(base_rows, test)
    base_top, test_first = side.top[:, :size], test_top[:, :size]
    shared = (base_top[:, :, None] == test_first[:, None, :]).any(axis=2).sum(axis=1)
    with np.errstate(invalid="ignore"):
        reverse = -expectation(test, d)
    kl = refined(expectation(base_rows, d), d, test, p=base_rows)
    kl_reverse = refined(reverse, d, base_rows, sign=-1.0, p=test)
    return {
        "kl": kl,
        "kl_reverse": kl_reverse,
        # JS ≤ ¼·(D(P‖Q) + D(Q‖P)): rows that puts below JS's closed-form range skip it.
        "js": js_rows(base_rows, test, p_entropy=side.entropy(), ratio=d,
                      p_probs=None if side.reference else side.probs(), at_most=0.25 * (kl + kl_reverse)),
        "tv": total_variation(base_rows, test, base_probs=side.probs()),
        "base_top1": side.top[:, 0],
        "test_top1": test_top[:, 0],
        "topk_overlap": shared / size,
    }


def fast_position_stats(side: BaseSide, base: LogRows, test: LogRows, top_k_size: int,
                        precise_test, test_top: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`position_stats` for ``--precision fast``: KL both ways, JS and TV in float32 arithmetic.

    ``base`` and ``test`` are fast rows (float32 logits, :mod:`klcli.core.fast`), ``side`` the base's
    precise rows (its top list, confidence and entropy stay exact). Each divergence comes with its per-row
    bound (:func:`klcli.core.fast_js.js_tv_estimate`, or :func:`klcli.core.fast.kl_estimate` for a KL
    direction that one cannot assure); if any row of any of them is not assured, ``precise_test()`` (the
    test's rows at full precision) gives the precise figures of those rows; so do rows whose z_q − z_p
    spans more than 2·FAST_HALF_RANGE (:func:`_narrow`), and a piece of only such rows takes the precise
    route whole, which costs less there. The argmaxes and the top-k overlap are those of the logits, exact
    as always.
    """
    from klcli.core import fast, fast_js

    test_top = top_k(test.shifted, top_k_size) if test_top is None else test_top
    wide = ~_narrow(base.shifted, test.shifted)
    if wide.all():  # the precise route is the cheaper one for such rows
        return position_stats(side, precise_test(), top_k_size, test_top=test_top)
    size = min(top_k_size, test.shifted.shape[1], side.top.shape[1])
    shared = (side.top[:, :size, None] == test_top[:, None, :size]).any(axis=2).sum(axis=1)
    # One centred pass gives JS, TV and both KL directions (fast_js); a KL direction whose rows it cannot
    # assure there takes kl's own fast kernel, and a row still not assured the precise figures.
    both: dict = {}
    js, js_bound, tv, tv_bound = fast_js.js_tv_estimate(base.shifted, test.shifted, kl=both)
    figures: dict[str, np.ndarray] = {"js": js, "tv": tv}
    redo = ~fast.assured(js, js_bound) | wide  # (a wide row's figures are the precise ones, in any piece)
    for name, (first, second) in (("kl", (base, test)), ("kl_reverse", (test, base))):
        value, bound = both[name]
        if not fast.assured(value, bound).all():
            value, bound = fast.kl_estimate(first.shifted, second.shifted)
        figures[name] = value
        redo |= ~fast.assured(value, bound)
    redo_tv = ~fast.assured(tv, tv_bound) & ~redo
    if redo.any():
        exact = position_stats(side, precise_test(), top_k_size, test_top=test_top)
        for name in ("kl", "kl_reverse", "js", "tv"):
            figures[name][redo] = exact[name][redo]
    if redo_tv.any():  # TV alone (σ = 0.5's rows, see fast_js): the precise TV only, not every divergence
        exact_tv = total_variation(side.rows, precise_test(), base_probs=side.probs())
        figures["tv"][redo_tv] = exact_tv[redo_tv]
    for name in ("kl", "kl_reverse", "js"):
        np.maximum(figures[name], 0.0, out=figures[name])
    figures.update(base_top1=side.top[:, 0], test_top1=test_top[:, 0], topk_overlap=shared / size)
    return figures


# compare --precision fast takes the float32 route for rows whose half-range of z_q − z_p is at most this:
# beyond it the series' degrees, NumPy's scalar expm1 and TV's fallback made it slower than the precise
# route (measured 1,024×32,000, one thread: 0.8–1.0× the precise time at σ = 0.1, half-range 0.44; 1.9× at
# σ = 0.2, half-range 0.88; 3× at σ = 0.5). A piece of such rows only takes the precise route whole.
FAST_HALF_RANGE = 0.5


def _narrow(base_logits: np.ndarray, test_logits: np.ndarray) -> np.ndarray:
    """Per row: whether (max − min)/2 of z_q − z_p is at most FAST_HALF_RANGE (a row holding a NaN or an
    infinity is not: the precise route reports it, with its row)."""
    from klcli.core.fast import scratch

    shape = (max(base_logits.shape[0], test_logits.shape[0]), base_logits.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.subtract(test_logits, base_logits, out=scratch("range", shape))
        half = (np.max(difference, axis=1) - np.min(difference, axis=1)) / 2
    return half <= FAST_HALF_RANGE


def total_variation(base: LogRows, test: LogRows, *, base_probs: np.ndarray | None = None) -> np.ndarray:
    """½ Σ |p − q| per row (either side may be a single row, broadcast)."""
    test_probs = test.probs()  # a new array: the difference is formed in it, one block-sized temporary fewer
    if test_probs.shape[0] < base.rows:  # a single test row broadcast against many base rows
        test_probs = np.broadcast_to(test_probs, (base.rows, test_probs.shape[1])).copy()
    difference = np.subtract(base.probs() if base_probs is None else base_probs, test_probs, out=test_probs)
    return 0.5 * np.sum(np.abs(difference, out=difference), axis=1)


def label_stats(base: LogRows, test: LogRows, labels: np.ndarray,
                input_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per position: each model's NLL of the observed token, and Δp = p_test(label) − p_base(label).

    ``input_rows`` number the positions in the input, for a top-K reference's errors (see ``label_logprob``).
    """
    rows = np.arange(labels.shape[0])
    if hasattr(base, "label_logprob"):  # a top-K reference: the stored label's exact log-probability
        log_p_base = base.label_logprob(labels, input_rows)
    else:
        log_p_base = base.shifted[rows, labels] - base.offset
    log_p_test = test.shifted[rows, labels] - test.offset
    return {
        "nll_base": -log_p_base,
        "nll_test": -log_p_test,
        "delta_p": np.exp(log_p_test) - np.exp(log_p_base),
    }


def label_rank(top: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the label's place in the row's top-k list (0 = the top-1), or k where it is not in the list.

    The label is in the top-j for every j > rank, so one array answers every j up to k.

    Examples
    --------
    >>> label_rank(np.array([[4, 2, 7], [1, 0, 3]]), np.array([2, 9])).tolist()
    [1, 3]
    """
    match = top == labels[:, None]
    return np.where(match.any(axis=1), np.argmax(match, axis=1), top.shape[1])


def confidence_buckets(confidence: np.ndarray, kl: np.ndarray, agree: np.ndarray,
                       buckets: int = 10) -> list[dict]:
    """KL and top-1 agreement by the base's top-1 probability, in ``buckets`` equal-width buckets of [0, 1].

    Bucket i holds i/buckets <= confidence < (i+1)/buckets (the last also 1.0);
    an empty bucket has ``kl_mean`` and ``top1_agreement`` None.

    Examples
    --------
    >>> rows = confidence_buckets(np.array([0.05, 0.95, 1.0]), np.array([1.0, 2.0, 4.0]),
    ...                           np.array([True, False, True]))
    >>> rows[0]["count"], rows[9]["count"], rows[9]["kl_mean"], rows[9]["top1_agreement"], rows[5]["kl_mean"]
    (1, 2, 3.0, 0.5, None)
    """
    edges = np.arange(buckets) / buckets
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, buckets - 1)
    counts = np.bincount(index, minlength=buckets)
    rows = []
    for i in range(buckets):
        inside = index == i
        count = int(counts[i])
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]) if i + 1 < buckets else 1.0,
                     "count": count,
                     "kl_mean": float(np.mean(kl[inside])) if count else None,
                     "top1_agreement": float(np.mean(agree[inside])) if count else None})
    return rows


def agreement_stderr(fraction: float, count: int) -> float | None:
    """√(p(1−p)/(n−1)), the standard error of an agreement rate (as llama.cpp reports).

    Examples
    --------
    >>> agreement_stderr(0.5, 101)
    0.05
    """
    return math.sqrt(fraction * (1.0 - fraction) / (count - 1)) if count > 1 else None


def nll_correlation(nll_base: np.ndarray, nll_test: np.ndarray) -> float | None:
    """Pearson correlation of the two models' token NLLs; None where it is undefined.

    Undefined with fewer than two tokens, when either side's NLLs are all equal
    (a zero standard deviation: NumPy would give NaN, or rounding noise), or
    when a loss is infinite.

    Examples
    --------
    >>> nll_correlation(np.array([1.0, 2.0, 4.0]), np.array([2.0, 4.0, 8.0]))
    1.0
    >>> nll_correlation(np.array([1.0, 2.0]), np.array([3.0, 3.0])) is None
    True
    """
    if nll_base.size < 2 or not (np.all(np.isfinite(nll_base)) and np.all(np.isfinite(nll_test))):
        return None
    if np.ptp(nll_base) == 0 or np.ptp(nll_test) == 0:
        return None
    return float(np.corrcoef(nll_base, nll_test)[0, 1])


def paired_difference(test: np.ndarray, base: np.ndarray) -> tuple[float, float | None]:
    """Mean of test − base and its standard error √((E[x²]−E[x]²)/(n−1)).

    Examples
    --------
    >>> paired_difference(np.array([2.0, 4.0]), np.array([1.0, 1.0]))
    (2.0, 1.0)
    """
    difference = test - base
    mean = float(np.mean(difference))
    if difference.size < 2:
        return mean, None
    return mean, float(np.std(difference, ddof=1) / math.sqrt(difference.size))


def mean_stderr(values: np.ndarray) -> float | None:
    """The standard error of the mean, √(E[(x−x̄)²]/(n−1)) (= std/√n); None for fewer than two or non-finite values.

    llama.cpp's ``mean_and_uncertainty`` forms the same figure from running sums
    (√((Σx²/n − x̄²)/(n−1))); the centred form avoids their cancellation.

    Examples
    --------
    >>> mean_stderr(np.array([1.0, 2.0, 3.0]))
    0.5773502691896257
    """
    if values.size < 2 or not np.all(np.isfinite(values)):
        return None
    if np.all(values == values.flat[0]):  # a constant: exactly 0 (its SIMD mean can be an ulp off the value)
        return 0.0
    centred = values - np.mean(values)
    return math.sqrt(float(np.mean(centred * centred)) / (values.size - 1))


def perplexity_figures(nll_base: np.ndarray, nll_test: np.ndarray) -> dict[str, float | None]:
    """Both perplexities ± their standard errors and their difference ± its, with llama.cpp's formulas.

    PPL = exp(mean NLL) with stderr u = PPL·stderr(mean NLL) (the delta method);
    ΔPPL = PPL_test − PPL_base with stderr √(u_t² + u_b² − 2·PPL_t·PPL_b·cov), cov the
    covariance of the two mean NLLs (tools/perplexity/perplexity.cpp, "Mean PPL(Q)-PPL(base)").
    That expression equals E[(PPL_t·(a−ā) − PPL_b·(b−b̄))²]/(n−1) for the NLLs a (test) and b (base),
    which is how it is formed here: for nearly identical models the three terms cancel, and their
    difference would be rounding noise of the size of each. Each stderr is None where it is undefined
    (one token, or an infinite NLL).

    Examples
    --------
    >>> f = perplexity_figures(np.log(np.array([2.0, 2.0])), np.log(np.array([4.0, 4.0])))
    >>> round(f["ppl_base"], 12), round(f["delta_ppl"], 12), f["delta_ppl_stderr"]
    (2.0, 2.0, 0.0)
    """
    ppl_base, ppl_test = perplexity_of(float(np.mean(nll_base))), perplexity_of(float(np.mean(nll_test)))
    stderr_base, stderr_test = mean_stderr(nll_base), mean_stderr(nll_test)
    u_base = None if stderr_base is None else ppl_base * stderr_base
    u_test = None if stderr_test is None else ppl_test * stderr_test
    delta_stderr = None
    if u_base is not None and u_test is not None and math.isfinite(ppl_base) and math.isfinite(ppl_test):
        linearised = ppl_test * (nll_test - np.mean(nll_test)) - ppl_base * (nll_base - np.mean(nll_base))
        delta_stderr = math.sqrt(float(np.mean(linearised * linearised)) / (nll_base.size - 1))
    return {"ppl_base": ppl_base, "ppl_base_stderr": u_base, "ppl_test": ppl_test, "ppl_test_stderr": u_test,
            "delta_ppl": ppl_test - ppl_base, "delta_ppl_stderr": delta_stderr}


def rms_figures(delta_p: np.ndarray) -> tuple[float, float | None]:
    """RMS Δp and its standard error as llama.cpp forms it: ½·stderr(mean Δp²)/RMS.

    Examples
    --------
    >>> rms_figures(np.array([0.0, 0.0]))
    (0.0, 0.0)
    """
    squares = delta_p * delta_p
    rms = math.sqrt(float(np.mean(squares)))
    spread = mean_stderr(squares)
    if spread is None:
        return rms, None
    return rms, (0.5 * spread / rms if rms > 0 else 0.0)
