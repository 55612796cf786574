"""Checkers for the LLM sparsity lab (chapter "Pruning, adapting and distilling a small language
model"): each tests a student's function against the reference below on randomized inputs and
raises `LabCheckError` naming the mistake it recognises.

The lab's functions, for the weight W (out, in) of a `torch.nn.Linear` and the layer's
calibration inputs X (N, in), one row per token:

- ``wanda_scores(w, x) -> scores``: ``|W_ij|·‖X[:, j]‖₂`` (Sun et al. 2024), exactly
  `minicompress.wanda.wanda_scores`;
- ``row_mask(scores, sparsity) -> mask``: in every row separately, prune the
  k = round(sparsity · in) smallest scores (Python's ``round``, half to even), ties pruned
  in position order (the earlier first), True where kept: `minicompress.wanda.row_mask`;
- ``nm_mask(w, n=2, m=4) -> mask``: keep the n largest ``|w|`` of every group of m consecutive
  inputs of a row, ties going to the earlier position: `minicompress.semistructured.nm_mask`
  of ``|w|`` (non-negative scores, such as Wanda's, can be passed as ``w``);
- ``merge_lora(w, a, b, alpha, rank) -> merged``: W + (α/r)·B A for A (r, in) and B (out, r),
  in w's dtype: the weight `minicompress.lora.merge_lora` writes into the merged Linear.

Every checker fails a function that modifies its inputs. With ``seed=grading_seed()`` the
graders draw hidden cases (other shapes, sparsities, N:M patterns, ranks and α).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress import lora, semistructured, wanda
from minicompress.labs import LabCheckError, _call, _unchanged

# shared with the chapter-9 lab: a tensor or a message, values compared, shapes printed
from minicompress.labs.llm_quantization import _same, _shape, _tensor

__all__ = [
    "check_merge_lora",
    "check_nm_mask",
    "check_row_mask",
    "check_wanda_scores",
    "merge_lora",
    "nm_mask",
    "row_mask",
    "wanda_scores",
]


# ---- the reference ---------------------------------------------------------------------------


def wanda_scores(w: Tensor, x: Tensor) -> Tensor:
    """``|W_ij|·‖X[:, j]‖₂`` for W (out, in) and inputs X (N, in): the norm of the change of
    output i over the N inputs when W_ij is set to 0 (chapter "Pruning, adapting and
    distilling a small language model", section "Magnitude and Wanda").
    `minicompress.wanda.wanda_scores`."""
    return wanda.wanda_scores(w, x)


def row_mask(scores: Tensor, sparsity: float) -> Tensor:
    """True where kept: in each row of ``scores`` (out, in), the k = round(sparsity · in)
    smallest are pruned, ties in position order (chapter "Pruning, adapting and distilling a
    small language model", section "Magnitude and Wanda"). `minicompress.wanda.row_mask`."""
    return wanda.row_mask(scores, sparsity)


def nm_mask(w: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """True where kept: the n largest ``|w|`` of every m consecutive inputs of each row of ``w``
    (out, in), ties to the earlier position (chapter "Pruning, adapting and distilling a
    small language model", section "2:4 semi-structured sparsity").
    `minicompress.semistructured.nm_mask` of ``|w|``."""
    w = check.float_tensor(w, "w", inf=True, why="magnitudes of NaN cannot be ranked")
    return semistructured.nm_mask(w.abs(), n, m)


def merge_lora(w: Tensor, a: Tensor, b: Tensor, alpha: float, rank: int) -> Tensor:
    """W + (α/r)·B A, for W (out, in), A (r, in) and B (out, r), in W's dtype (chapter
    "Pruning, adapting and distilling a small language model", section LoRA).

    Built as a `minicompress.lora.LoRALinear` holding W, A and B, merged by
    `minicompress.lora.merge_lora`: the same arithmetic, ((α/r)·B) A added to W.
    """
    w = check.float_tensor(w, "w")
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D (out, in) weight, got shape {tuple(w.shape)}")
    out, n = w.shape
    rank = check.integer(rank, "rank", 1, min(out, n))
    a, b = check.float_tensor(a, "a"), check.float_tensor(b, "b")
    if a.shape != (rank, n) or b.shape != (out, rank):
        raise ValueError(f"a must be (rank, in) = ({rank}, {n}) and b (out, rank) = ({out}, "
                         f"{rank}), got {tuple(a.shape)} and {tuple(b.shape)}")  # fmt: skip
    # skip_init: no random weights drawn from the global generator
    base = nn.utils.skip_init(nn.Linear, n, out, bias=False, dtype=w.dtype)
    adapter = lora.LoRALinear(base, rank, alpha)
    with torch.no_grad():
        base.weight.copy_(w)
        adapter.lora_a.copy_(a)
        adapter.lora_b.copy_(b)
    return lora.merge_lora(nn.Sequential(adapter))[0].weight.detach()


# ---- shared helpers --------------------------------------------------------------------------


def _drawer(seed: int) -> tuple[Callable, Callable, Callable, torch.Generator]:
    """(pick, draw, randn, generator) on one ``torch.Generator(seed)``: a choice among options,
    an int in [low, high], a standard normal tensor, and the generator itself."""
    gen = torch.Generator().manual_seed(seed)

    def pick(*options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    return pick, draw, randn, gen


def _check_mask(got: object, shape: torch.Size, where: str) -> Tensor:
    got = _tensor(got, where, "the mask")
    if got.shape != shape:
        hint = " (transposed: (in, out))" if tuple(got.shape) == tuple(shape)[::-1] else ""
        raise LabCheckError(f"{where} returned shape {_shape(got.shape)}{hint}, expected the "
                            f"weight's shape {_shape(shape)}.")  # fmt: skip
    if got.dtype != torch.bool:
        hint = ""
        if bool(((got == 0) | (got == 1)).all()):
            hint = " Your 0/1 values are right as a mask: return them as .bool()."
        raise LabCheckError(f"{where} must return a bool mask (True = kept), got "
                            f"{got.dtype}.{hint}")  # fmt: skip
    return got


# ---- 1. wanda_scores -------------------------------------------------------------------------


def _wanda_cases(seed: int) -> list[tuple[str, Tensor, Tensor]]:
    """(what, w, x): input channels whose norms spread over two decades, one outlier channel;
    a square case with N = in = out (a norm over the wrong axis then has the right shape),
    one with N = out, one with N = in."""
    pick, draw, randn, gen = _drawer(seed)

    def inputs(n: int, d: int) -> Tensor:
        x = randn(n, d) * torch.logspace(-1, 1, d)[torch.randperm(d, generator=gen)]
        x[:, int(torch.randint(d, (1,), generator=gen))] *= 8  # an outlier channel
        return x

    d = pick(16, 24)
    out2, in2 = pick(24, 32), pick(8, 12)
    in3, out3 = pick(16, 20), pick(6, 10)
    return [
        ("N = in = out", randn(d, d) * 0.1, inputs(d, d)),
        ("N = out", randn(out2, in2) * 0.1, inputs(out2, in2)),
        ("N = in", randn(out3, in3) * 0.2, inputs(in3, in3)),
        ("typical", randn(draw(8, 16), 32) * 0.05, inputs(pick(100, 128), 32)),
    ]


def _wanda_mistakes(w: Tensor, x: Tensor) -> list[tuple[Tensor, str]]:
    (n, d), out = x.shape, w.shape[0]
    wa, norm = w.abs(), x.norm(dim=0)
    per_channel = "input channel j is column j of X (N, in): ‖X[:, j]‖₂ = x.norm(dim=0)"
    mistakes = [
        (wa * norm**2, "squares the norm: ‖X[:, j]‖₂² = Σₙ X_nj² is the channel's energy; the "
         "score is |W_ij|·‖X[:, j]‖₂, the size of the change of output i, without the square"),
        ((w * norm) ** 2, "returns the squared score W_ij²·‖X[:, j]‖₂² (the expected squared "
         "change of output i): it ranks weights the same way, but the score asked for is its "
         "square root, |W_ij|·‖X[:, j]‖₂"),
        (wa, "ignores the inputs: |W_ij| alone is magnitude pruning; Wanda multiplies it by "
         "the norm of input channel j, ‖X[:, j]‖₂"),
        (wa * x.norm(), "multiplies |W| by the norm of the whole X, one number for every "
         f"weight, which ranks them as magnitude does: {per_channel}"),
        (w * norm, "forgot the absolute value of W: a large negative weight gets a negative "
         "score and would be pruned first; |W_ij|·‖X[:, j]‖₂"),
        (wa * x.abs().sum(0), "uses the L1 norm Σₙ|X_nj|: Wanda's is the Euclidean norm "
         "‖X[:, j]‖₂ = sqrt(Σₙ X_nj²), x.norm(dim=0)"),
        (wa * x.abs().mean(0), "uses the mean of |X_nj|: Wanda's score uses the Euclidean "
         "norm ‖X[:, j]‖₂ = sqrt(Σₙ X_nj²), x.norm(dim=0)"),
        (wa * norm / math.sqrt(n), "divides the norm by √N (the channel's root mean square): "
         "the ranking is the same, but the score is |W_ij|·‖X[:, j]‖₂, without 1/√N"),
        (wa * w.norm(dim=0), "takes the norm of W's column j instead of X's: the activations "
         f"are what Wanda adds to magnitude; {per_channel}"),
    ]  # fmt: skip
    sample = "takes the norm of each sample (row n of X, x.norm(dim=1))"
    if n == d:
        mistakes.append((wa * x.norm(dim=1), f"{sample}, which has nothing to do with input "
                         f"j: {per_channel}"))  # fmt: skip
    if n == out:
        mistakes.append((wa * x.norm(dim=1)[:, None], f"{sample} and puts it on output row n "
                         f"of W: {per_channel}"))  # fmt: skip
    if out == d:
        mistakes.append((wa * norm[:, None], "puts channel i's norm on output row i (the norm "
                         "over outputs): ‖X[:, j]‖₂ belongs to input j, which is column j of W "
                         "(out, in), so w.abs() * x.norm(dim=0) broadcasts it over the last "
                         "dimension"))  # fmt: skip
    return mistakes


def check_wanda_scores(fn: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> None:
    """Check ``fn(w, x) -> scores`` (out, in): ``|W_ij|·‖X[:, j]‖₂``, naming the norm over the
    wrong axis (per sample, or put on the rows), the squared norm or score, the L1 norm or
    mean, ``|W|`` alone, and a missing absolute value."""
    cases = _wanda_cases(seed)
    for what, w, x in cases:
        where = f"wanda_scores(w {_shape(w.shape)}, x {_shape(x.shape)} [{what}])"
        given = {"w": w.clone(), "x": x.clone()}
        got = _tensor(_call(fn, where, given["w"], given["x"]), where, "the scores")
        _unchanged({"w": w, "x": x}, given, where)
        want = wanda_scores(w, x)
        if got.shape != want.shape:
            hint = ""
            if tuple(got.shape) == (x.shape[1],):
                hint = " That is one value per input channel: multiply it by |W|."
            elif tuple(got.shape) == tuple(want.shape)[::-1]:
                hint = " That is transposed: W is (out, in), and so are its scores."
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected W's "
                                f"shape {_shape(want.shape)}.{hint}")  # fmt: skip
        if got.dtype != want.dtype:
            raise LabCheckError(f"{where} returned {got.dtype}, expected {want.dtype} (the "
                                "dtype of w and x).")  # fmt: skip
        if _same(got, want, rtol=1e-5, atol=1e-7):
            continue
        for value, why in _wanda_mistakes(w, x):
            if _same(got, value, rtol=1e-4, atol=1e-7):
                raise LabCheckError(f"{where}: your wanda_scores {why}.")
        i, j = (int(k) for k in (~torch.isclose(got, want, rtol=1e-5)).nonzero()[0])
        raise LabCheckError(
            f"{where}: scores[{i}, {j}] = {float(got[i, j]):.6g}, expected |W[{i}, {j}]|·"
            f"‖X[:, {j}]‖₂ = {float(w[i, j].abs()):.4g} · {float(x[:, j].norm()):.4g} = "
            f"{float(want[i, j]):.6g}."
        )
    print(f"✓ wanda_scores passed {len(cases)} randomized checks")


# ---- 2. row_mask -----------------------------------------------------------------------------


def _row_cases(seed: int) -> list[tuple[str, Tensor, float]]:
    """(what, scores, sparsity): rows whose scores differ by two decades (a threshold over the
    whole matrix then prunes rows unevenly), counts sparsity · in with fractional parts
    below, above and exactly ½, a square matrix (ranking down the columns keeps the shape),
    repeated scores (ties), and sparsities 0 and 1 (the ends of the range 0 ≤ sparsity ≤ 1)."""
    pick, draw, randn, gen = _drawer(seed)

    def scores(out: int, n: int) -> Tensor:
        rows = torch.logspace(-1, 1, out)[torch.randperm(out, generator=gen)]
        return randn(out, n).abs() * rows[:, None]

    d = pick(12, 16)
    ties = torch.randint(0, 4, (draw(5, 8), 12), generator=gen).float()
    return [
        ("rows of different scale", scores(draw(6, 10), 16), pick(0.5, 0.75)),
        ("square", scores(d, d), pick(0.25, 0.5)),
        ("0.3 · 12 = 3.6", scores(draw(5, 8), 12), 0.3),
        ("0.33 · 10 = 3.3", scores(draw(5, 8), 10), 0.33),
        ("0.125 · 20 = 2.5", scores(draw(4, 7), 20), 0.125),
        ("repeated scores", ties, pick(0.5, 0.6)),
        ("sparsity 0", scores(draw(3, 5), pick(8, 12)), 0.0),
        ("wide", scores(draw(3, 6), pick(48, 64)), pick(0.6, 0.7, 0.55)),
        ("sparsity 1", scores(draw(3, 5), pick(8, 12)), 1.0),
    ]


def _count_hint(removed: int, sparsity: float, n: int) -> str:
    """Why ``removed`` differs from round(sparsity · n): ½ rounded up, ceil, int, 1 − s."""
    exact, k = sparsity * n, round(sparsity * n)
    half_up = math.floor(exact + 0.5)
    if removed == half_up != k:
        how = ("math.ceil or floor(x + 0.5)" if math.ceil(exact) == half_up
               else "floor(x + 0.5) or int(x + 0.5)")  # fmt: skip
        return (f" sparsity · in = {exact:.4g}: your count rounds .5 up ({how}) to {half_up}; "
                f"Python's round() rounds half to even: round({exact:.4g}) = {k}, the count "
                "the reference prunes.")  # fmt: skip
    for name, value in (("math.ceil", math.ceil(exact)), ("int()", int(exact))):
        if value != k and removed == value:
            return (f" sparsity · in = {exact:.4g}: {name} gives {value}; the reference "
                    f"prunes round({exact:.4g}) = {k}.")  # fmt: skip
    if removed == n - k and k != n - k:
        return (f" You kept round(sparsity · in) = {k} and pruned the rest: sparsity is the "
                "share *pruned*.")  # fmt: skip
    return ""


def _explain_row_mask(got: Tensor, want: Tensor, scores: Tensor, sparsity: float,
                      where: str) -> None:  # fmt: skip
    out, n = scores.shape
    k = round(sparsity * n)
    if 2 * k != n and torch.equal(got, ~want):  # at 2k = n it is the largest pruned, below
        raise LabCheckError(f"{where}: the mask is inverted. True must mean *kept*.")
    removed = (~got).sum(1)
    if not bool((removed == removed[0]).all()):
        a, b = int(removed.argmin()), int(removed.argmax())
        per_column = (~got).sum(0)
        # ranked down the columns (dim=0): round(sparsity · out) pruned in every column
        if bool((per_column == round(sparsity * out)).all()):
            raise LabCheckError(
                f"{where}: you ranked the scores within each *column* (over the {out} outputs, "
                f"dim=0): compare the {n} inputs of each output row, and prune k = "
                "round(sparsity · in) in every row (sort along dim=1)."
            )
        raise LabCheckError(
            f"{where}: row {a} lost {int(removed[a])} weights, row {b} lost {int(removed[b])}"
            f": every row must lose k = round(sparsity · in) = {k}. A threshold or sort over "
            "the whole matrix prunes rows of small scores entirely (Wanda compares the weights "
            "within each output row); a threshold per row prunes all or none of the scores "
            "equal to it. Sort each row (dim=1) and prune exactly its first k."
        )
    if int(removed[0]) != k:
        raise LabCheckError(
            f"{where}: every row lost {int(removed[0])} weights, expected k = round(sparsity "
            f"· in) = round({sparsity} · {n}) = {k}.{_count_hint(int(removed[0]), sparsity, n)}"
        )
    if torch.equal(got, wanda.row_mask(-scores, sparsity)):
        inverted = " (or the mask is inverted: True must mean *kept*)" if 2 * k == n else ""
        raise LabCheckError(f"{where}: you pruned the *largest* scores of each row{inverted}; "
                            "prune the smallest, keep the largest.")  # fmt: skip
    if torch.equal(got, ~want):
        raise LabCheckError(f"{where}: the mask is inverted. True must mean *kept*.")
    values = torch.sort(scores, dim=1).values
    pruned = torch.where(~got, scores, torch.inf).sort(dim=1).values[:, :k]
    if torch.equal(pruned, values[:, :k]):
        i = int((got != want).any(1).nonzero()[0])
        raise LabCheckError(
            f"{where}: you pruned the right scores, but among equal scores in row {i} not the "
            "reference's positions: ties are pruned in position order, the earliest first, as "
            "a stable sort gives them (torch.sort(scores, dim=1, stable=True); topk and "
            "kthvalue do not promise an order among equal values)."
        )
    i = int((got != want).any(1).nonzero()[0])
    kept, cut = scores[i][got[i]].min(), scores[i][~got[i]].max()
    raise LabCheckError(f"{where}: row {i} keeps a score of {float(kept):.4g} but prunes "
                        f"{float(cut):.4g}: keep the largest scores of each row.")  # fmt: skip


def check_row_mask(fn: Callable[[Tensor, float], Tensor], seed: int = 0) -> None:
    """Check ``fn(scores, sparsity) -> bool mask``: k = round(sparsity · in) smallest pruned in
    every row, ties in position order; naming a ranking over the whole matrix or down the
    columns, the wrong count (.5 rounded up, ceil, int, kept instead of pruned), the largest
    pruned, an inverted mask and ties broken the other way."""
    cases = _row_cases(seed)
    for what, scores, sparsity in cases:
        where = f"row_mask(scores {_shape(scores.shape)} [{what}], sparsity={sparsity})"
        given = scores.clone()
        got = _call(fn, where, given, sparsity)
        _unchanged({"scores": scores}, {"scores": given}, where)
        got = _check_mask(got, scores.shape, where)
        want = row_mask(scores, sparsity)
        if not torch.equal(got, want):
            _explain_row_mask(got, want, scores, sparsity, where)
    print(f"✓ row_mask passed {len(cases)} randomized checks")


# ---- 3. nm_mask ------------------------------------------------------------------------------


def _nm_cases(seed: int) -> list[tuple[str, Tensor, int, int]]:
    """(what, w, n, m): large negative weights (ranking by w drops them), a square weight
    with out a multiple of m (groups down the columns keep the shape), weights that take
    few values (ties in ``|w|``, also between w and −w), other patterns than 2:4."""
    pick, draw, randn, gen = _drawer(seed)
    d = 4 * pick(4, 5)
    signed = randn(draw(4, 8), 32) * 0.1
    signed[signed < -0.1] *= 5  # the largest magnitudes are negative
    levels = torch.randint(-3, 4, (draw(4, 8), 24), generator=gen).float() / 4
    n2, m2 = pick((1, 4), (3, 4))
    n3, m3 = pick((2, 8), (4, 8), (3, 8))
    return [
        ("square", randn(d, d), 2, 4),
        ("negative weights", signed, 2, 4),
        ("few values", levels, 2, 4),
        (f"{n2}:{m2}", randn(draw(3, 6), 4 * draw(3, 6)), n2, m2),
        (f"{n3}:{m3}", randn(8, 8 * draw(2, 4)), n3, m3),
    ]


def _nm_mistakes(w: Tensor, n: int, m: int) -> list[tuple[Tensor, str]]:
    out, d = w.shape
    a = w.abs()

    def strided() -> Tensor:  # group k = inputs k, k + in/m, k + 2·in/m, …
        perm = torch.arange(d).view(m, d // m).T.reshape(-1)
        return semistructured.nm_mask(a[:, perm], n, m)[:, torch.argsort(perm)]

    group = f"every group of m = {m} consecutive inputs of a row"
    mistakes = [
        (semistructured.nm_mask(-a, n, m), f"keeps the {n} *smallest* |w| of each group of "
         f"{m}: keep the {n} largest" + (" (or the mask is inverted: True must mean *kept*)"
                                         if m == 2 * n else "")),
        (semistructured.nm_mask(w, n, m), "ranks the weights by w, not |w|: a large negative "
         "weight matters as much as a large positive one"),
        (strided(), "groups the inputs k, k + in/m, k + 2·in/m, … (strided: w.reshape(out, m, "
         "in // m)); a group is m *consecutive* inputs, w.reshape(out, in // m, m)"),
        (wanda.row_mask(a, 1 - n / m), f"keeps the largest {n}/{m} of each whole row "
         f"(unstructured): N:M sparsity keeps exactly n = {n} in {group}, which is what "
         "sparse hardware needs"),
    ]  # fmt: skip
    if out % m == 0:
        mistakes.append((semistructured.nm_mask(a.T, n, m).T, "forms the groups along the "
                         "outputs (down a column of W): a group is m consecutive *inputs* of "
                         "one row, w.reshape(out, in // m, m)"))  # fmt: skip
    if (n, m) != (2, 4) and d % 4 == 0:
        mistakes.append((semistructured.nm_mask(a, 2, 4), f"keeps 2 of every 4 whatever n and "
                         f"m are: use the arguments, here n = {n} of m = {m}"))  # fmt: skip
    if m - n != n:
        mistakes.append((semistructured.nm_mask(a, m - n, m), f"keeps m − n = {m - n} per "
                         f"group: n = {n} is the number *kept* per group of {m}"))  # fmt: skip
    return mistakes


def check_nm_mask(fn: Callable[..., Tensor], seed: int = 0) -> None:
    """Check ``fn(w, n, m) -> bool mask``: the n largest ``|w|`` of every m consecutive inputs of a
    row, ties to the earlier position; naming the smallest kept, w for ``|w|``, groups down the
    columns or strided, n/m of each row, n and m ignored or swapped."""
    cases = _nm_cases(seed)
    for what, w, n, m in cases:
        where = f"nm_mask(w {_shape(w.shape)} [{what}], n={n}, m={m})"
        given = w.clone()
        got = _call(fn, where, given, n, m)
        _unchanged({"w": w}, {"w": given}, where)
        got = _check_mask(got, w.shape, where)
        want = nm_mask(w, n, m)
        if torch.equal(got, want):
            continue
        for value, why in _nm_mistakes(w, n, m):
            if torch.equal(got, value):
                raise LabCheckError(f"{where}: your nm_mask {why}.")
        if torch.equal(got, ~want):
            raise LabCheckError(f"{where}: the mask is inverted. True must mean *kept*.")
        out, d = w.shape
        kept = got.view(out, d // m, m).sum(2)
        if not bool((kept == n).all()):
            i, g = (int(k) for k in (kept != n).nonzero()[0])
            raise LabCheckError(
                f"{where}: group {g} of row {i} (inputs {g * m} … {g * m + m - 1}) keeps "
                f"{int(kept[i, g])} weights; every group of {m} consecutive inputs keeps "
                f"exactly n = {n}."
            )
        a = w.abs().view(out, d // m, m)
        mine = torch.where(got.view_as(a), a, -torch.inf).sort(2, descending=True).values
        best = a.sort(2, descending=True).values
        i, g = (int(k) for k in (got != want).view(out, d // m, m).any(2).nonzero()[0])
        if torch.equal(mine[..., :n], best[..., :n]):
            raise LabCheckError(
                f"{where}: you kept the right magnitudes, but among equal |w| in group {g} of "
                f"row {i} not the reference's positions: ties go to the earlier position, as "
                "a stable sort gives them (torch.sort(..., descending=True, stable=True); "
                "topk does not promise an order among equal values)."
            )
        raise LabCheckError(
            f"{where}: group {g} of row {i} keeps |w| = "
            f"{[round(float(v), 4) for v in a[i, g][got.view_as(a)[i, g]]]} of "
            f"{[round(float(v), 4) for v in a[i, g]]}: keep the {n} largest |w| of every group "
            f"of m = {m} consecutive inputs."
        )
    print(f"✓ nm_mask passed {len(cases)} randomized checks")


# ---- 4. merge_lora ---------------------------------------------------------------------------


def _lora_cases(seed: int) -> list[tuple[str, Tensor, Tensor, Tensor, float, int]]:
    """(what, w, a, b, alpha, rank): trained-looking adapters (B ≠ 0) whose update is as large
    as W; r > 1 and α different from 1, r and r² (so that α/r, α, 1/r, r/α and 1 differ);
    first α/r = 2.5 or 3.5 (α // r, an integer scale, is then neither α/r, 0 nor 1); square
    weights (B A transposed then has the right shape) and a bfloat16 one (the dtype
    must be kept)."""
    pick, draw, randn, _ = _drawer(seed)

    def case(what: str, out: int, n: int, rank: int, alpha: float, dtype=torch.float32):
        w = randn(out, n) * 0.1
        a = randn(rank, n) / math.sqrt(n)
        b = randn(out, rank) * 0.2
        return what, w.to(dtype), a.to(dtype), b.to(dtype), alpha, rank

    d = pick(12, 16)
    return [
        case("square", d, d, rank := pick(2, 4), pick(2.5, 3.5) * rank),
        case("wide", draw(6, 10), pick(24, 32), pick(2, 3), pick(5.0, 12.0)),
        case("tall", pick(24, 32), draw(6, 10), pick(3, 4), pick(2.0, 6.0)),
        case("square, bfloat16", 8, 8, pick(2, 4), pick(1.5, 0.5), torch.bfloat16),
    ]


def _lora_mistakes(w: Tensor, a: Tensor, b: Tensor, alpha: float, rank: int):
    s = alpha / rank
    ba = b.double() @ a.double()
    w = w.double()
    mistakes = []
    if s != math.floor(s):  # before "forgot the scale": α // r = 1 gives W + B A as well
        either = "forgot the scale α/r, or " if math.floor(s) == 1 else ""
        mistakes.append((w + math.floor(s) * ba, f"{either}rounds the scale down: the scale α/r is "
                         f"a float, and α // r or int(α/r) gives "
                         f"{math.floor(s)} instead of {alpha:g}/{rank} = {s:g}; the update is "
                         "(α/r)·B A"))  # fmt: skip
    mistakes += [
        (w + ba, f"forgot the scale α/r = {alpha:g}/{rank} = {s:g}: the update is (α/r)·B A"),
        (w + (rank / alpha) * ba, "scales by r/α: the update is (α/r)·B A"),
        (w + alpha * ba, "scales by α alone: the update is (α/r)·B A, α divided by the rank"),
        (w + ba / rank, "scales by 1/r alone: the update is (α/r)·B A, α divided by the rank"),
        (s * ba, "returns the update (α/r)·B A alone: the merged weight is W + (α/r)·B A"),
        (w - s * ba, "subtracts the update: the merged weight is W **+** (α/r)·B A"),
    ]
    if w.shape[0] == w.shape[1]:
        mistakes.append((w + s * ba.T, "adds (B A)ᵀ = Aᵀ Bᵀ: the shapes fit only because W is "
                         "square. B (out, r) @ A (r, in) is (out, in), like W"))  # fmt: skip
    return mistakes


def check_merge_lora(fn: Callable[..., Tensor], seed: int = 0) -> None:
    """Check ``fn(w, a, b, alpha, rank) -> merged``: W + (α/r)·B A in W's dtype; naming B A
    transposed (on square weights), the scale α/r forgotten, rounded down or inverted, the
    update alone or subtracted, and a changed dtype."""
    cases = _lora_cases(seed)
    for what, w, a, b, alpha, rank in cases:
        where = (f"merge_lora(w {_shape(w.shape)} [{what}], a {_shape(a.shape)}, b "
                 f"{_shape(b.shape)}, alpha={alpha:g}, rank={rank})")  # fmt: skip
        given = {"w": w.clone(), "a": a.clone(), "b": b.clone()}
        got = _call(fn, where, given["w"], given["a"], given["b"], alpha, rank)
        _unchanged({"w": w, "a": a, "b": b}, given, where)
        got = _tensor(got, where, "the merged weight")
        want = merge_lora(w, a, b, alpha, rank)
        if got.shape != w.shape:
            hint = ""
            if tuple(got.shape) == tuple(w.shape)[::-1]:
                hint = " That is (B A)ᵀ = Aᵀ Bᵀ: B (out, r) @ A (r, in) is (out, in)."
            elif tuple(got.shape) == (rank, rank):
                hint = " That is A B or Bᵀ Aᵀ: the update is B (out, r) @ A (r, in)."
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected W's "
                                f"{_shape(w.shape)}.{hint}")  # fmt: skip
        if got.dtype != w.dtype:
            raise LabCheckError(f"{where} returned {got.dtype}: the merged weight replaces W "
                                f"in the layer, so it keeps W's dtype, {w.dtype} (as "
                                "minicompress.lora.merge_lora does).")  # fmt: skip
        # bfloat16 keeps 8 significant bits: (α/r)·B then A, or B A then α/r, round apart
        rtol = 1e-5 if w.dtype == torch.float32 else 2e-2
        atol = rtol * float(want.abs().max())
        if _same(got, want, rtol=rtol, atol=atol):
            continue
        for value, why in _lora_mistakes(w, a, b, alpha, rank):
            if _same(got, value, rtol=rtol, atol=atol):
                raise LabCheckError(f"{where}: your merge_lora {why}.")
        i, j = (int(k) for k in (~torch.isclose(got.double(), want.double(), rtol=rtol,
                                                atol=atol)).nonzero()[0])  # fmt: skip
        ba = float(b[i].double() @ a[:, j].double())
        raise LabCheckError(
            f"{where}: merged[{i}, {j}] = {float(got[i, j]):.6g}, expected W + (α/r)·(B A) = "
            f"{float(w[i, j]):.5g} + {alpha / rank:g} · {ba:.5g} = {float(want[i, j]):.6g}."
        )
    print(f"✓ merge_lora passed {len(cases)} randomized checks")
