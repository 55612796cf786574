"""LLM sparsity lab checkers: the reference agrees with the chapter-10 package exactly, it and
plain student-style solutions pass on the visible and hidden seeds, and each wrong kind is
rejected with the message naming it (the norm over the wrong axis or squared, a ranking over
the whole matrix, the wrong count per row, the 2 smallest of 4, groups along the outputs, B A
transposed, the α/r scale forgotten, a modified input, a wrong dtype or shape)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minicompress import lora, semistructured, wanda
from minicompress.labs import LabCheckError
from minicompress.labs import llm_sparsity as lab
from minicompress.labs.llm_sparsity import (
    check_merge_lora,
    check_nm_mask,
    check_row_mask,
    check_wanda_scores,
)

SEEDS = [0, 1, 4242, 20_261_203]

# ---- plain solutions, as a student writes them ---------------------------------------------


def scores_ok(w, x):
    return w.abs() * x.norm(dim=0)


def row_mask_ok(scores, sparsity):
    k = round(sparsity * scores.shape[1])
    pruned = torch.sort(scores, dim=1, stable=True).indices[:, :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter(1, pruned, False)


def _nm(values, n, m):
    out, d = values.shape
    groups = values.reshape(out, d // m, m)
    kept = torch.sort(groups, dim=2, descending=True, stable=True).indices[..., :n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter(2, kept, True).reshape(out, d)


def nm_mask_ok(w, n=2, m=4):
    return _nm(w.abs(), n, m)


def merge_ok(w, a, b, alpha, rank):
    return w + (alpha / rank) * (b @ a)


# ---- the reference is the package ------------------------------------------------------------


def test_reference_is_the_chapter_package():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(6, 8, generator=g), torch.randn(20, 8, generator=g)
    s = wanda.wanda_scores(w, x)
    assert torch.equal(lab.wanda_scores(w, x), s)
    assert torch.equal(lab.row_mask(s, 0.5), wanda.row_mask(s, 0.5))
    assert torch.equal(lab.nm_mask(w, 2, 4), semistructured.nm_mask(w.abs(), 2, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_lora_equals_the_merged_model_and_the_adapted_forward(dtype):
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(8, 6, bias=False).to(dtype)
    adapted = lora.add_lora(nn.Sequential(linear), rank=2, alpha=6.0, names=["0"], seed=3)
    with torch.no_grad():
        adapted[0].lora_b.copy_(torch.randn(6, 2, generator=g))
    a, b = adapted[0].lora_a.detach(), adapted[0].lora_b.detach()
    got = lab.merge_lora(linear.weight.detach(), a, b, 6.0, 2)
    assert got.dtype == dtype
    assert torch.equal(got, lora.merge_lora(adapted)[0].weight.detach())
    if dtype == torch.float32:
        x = torch.randn(5, 8, generator=g)
        torch.testing.assert_close(x @ got.T, adapted(x).detach())
        # the package's arithmetic: ((α/r)·B) A added to W
        assert torch.equal(got, linear.weight.detach() + (6.0 / 2) * b @ a)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 16), st.floats(0, 1), st.integers(0, 2**16))
def test_row_mask_prunes_round_sparsity_in_every_row(out, n, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (out, n), generator=g).float()  # many ties
    mask = lab.row_mask(scores, sparsity)
    assert ((~mask).sum(1) == round(sparsity * n)).all()
    assert torch.equal(mask, row_mask_ok(scores, sparsity))


# ---- correct solutions pass ------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_and_plain_solutions_pass(seed, capsys):
    for check, functions in (
        (check_wanda_scores, (lab.wanda_scores, scores_ok)),
        (check_row_mask, (lab.row_mask, row_mask_ok)),
        (check_nm_mask, (lab.nm_mask, nm_mask_ok)),
        (check_merge_lora, (lab.merge_lora, merge_ok)),
    ):
        for fn in functions:
            check(fn, seed=seed)
    assert capsys.readouterr().out.count("✓") == 8


def test_hidden_seeds_draw_other_cases():
    shapes = {seed: [tuple(w.shape) for _, w, _ in lab._wanda_cases(seed)] for seed in SEEDS}
    assert len({tuple(s) for s in shapes.values()}) > 1
    patterns = {(n, m) for seed in SEEDS for _, _, n, m in lab._nm_cases(seed)}
    assert len(patterns) > 3
    ranks = {(r, alpha) for seed in SEEDS for *_, alpha, r in lab._lora_cases(seed)}
    assert len(ranks) > 4


def test_not_written_yet():
    def blank(*args):
        raise NotImplementedError()

    for check in (check_wanda_scores, check_row_mask, check_nm_mask, check_merge_lora):
        with pytest.raises(LabCheckError, match="not written yet"):
            check(blank)


# ---- 1. wanda_scores -------------------------------------------------------------------------


def scores_in_place(w, x):
    return w.abs_().mul_(x.norm(dim=0))


WRONG_SCORES = [
    (lambda w, x: w.abs() * x.norm(dim=1), r"norm of each sample \(row n of X"),
    (lambda w, x: w.abs() * x.norm(dim=0)[:, None], "on output row i"),
    (lambda w, x: w.abs() * x.norm(dim=0) ** 2, "squares the norm"),
    (lambda w, x: (w * x.norm(dim=0)) ** 2, "squared score"),
    (lambda w, x: w.abs(), "ignores the inputs"),
    (lambda w, x: w.abs() * x.norm(), "norm of the whole X"),
    (lambda w, x: w * x.norm(dim=0), "absolute value"),
    (lambda w, x: w.abs() * x.abs().sum(0), "L1 norm"),
    (lambda w, x: w.abs() * x.abs().mean(0), r"mean of \|X_nj\|"),
    (lambda w, x: w.abs() * x.norm(dim=0) / math.sqrt(len(x)), "√N"),
    (lambda w, x: w.abs() * w.norm(dim=0), "W's column"),
    (lambda w, x: x.norm(dim=0), "one value per input channel"),
    (lambda w, x: (w.abs() * x.norm(dim=0))[:, 1:], r"returned shape"),
    (lambda w, x: (w.abs() * x.norm(dim=0)).double(), "returned torch.float64"),
    (lambda w, x: w.abs() * x.norm(dim=0) + 1e-3, r"expected \|W\["),
    (scores_in_place, "modified its argument `w` in place"),
    ("not a function", "expected a function"),
]


@pytest.mark.parametrize(("fn", "message"), WRONG_SCORES)
def test_wanda_scores_mistakes_are_named(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_wanda_scores(fn)


# ---- 2. row_mask -----------------------------------------------------------------------------


def _prune_count(count):
    def fn(scores, sparsity):
        k = count(sparsity * scores.shape[1])
        pruned = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        return torch.ones_like(scores, dtype=torch.bool).scatter(1, pruned, False)

    return fn


def row_mask_global(scores, sparsity):
    k = round(sparsity * scores.numel())
    mask = torch.ones(scores.numel(), dtype=torch.bool)
    mask[torch.sort(scores.flatten(), stable=True).indices[:k]] = False
    return mask.view_as(scores)


def row_mask_columns(scores, sparsity):
    return row_mask_ok(scores.T, sparsity).T


def row_mask_ties_last(scores, sparsity):
    flipped = scores.flip(1)  # among equal scores the later position is pruned first
    return row_mask_ok(flipped, sparsity).flip(1)


def row_mask_threshold(scores, sparsity):  # every score equal to the k-th is pruned
    k = round(sparsity * scores.shape[1])
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    return scores > scores.kthvalue(k, dim=1, keepdim=True).values


def row_mask_in_place(scores, sparsity):
    mask = row_mask_ok(scores, sparsity)
    scores.mul_(mask)
    return mask


WRONG_ROW = [
    (row_mask_global, "every row must lose"),
    (row_mask_columns, r"within each \*column\*"),
    (_prune_count(math.ceil), "math.ceil gives"),
    (_prune_count(int), r"int\(\) gives"),
    (_prune_count(lambda v: math.floor(v + 0.5)), r"rounds \.5 up .*half to even"),
    (_prune_count(lambda v: int(v + 0.5)), r"rounds \.5 up .*half to even"),
    (lambda s, p: row_mask_ok(s, 1 - p), r"share \*pruned\*"),
    (lambda s, p: ~row_mask_ok(s, p), "inverted"),
    (lambda s, p: ~row_mask_ok(s, 1 - p), "inverted"),  # the right count, inverted
    (lambda s, p: row_mask_ok(-s, p), r"pruned the \*largest\*"),
    (row_mask_ties_last, "among equal scores"),
    (row_mask_threshold, "a threshold per row prunes all or none"),
    (lambda s, p: row_mask_ok(s, p).float(), r"\.bool\(\)"),
    (lambda s, p: row_mask_ok(s, p)[:, 1:], "returned shape"),
    (row_mask_in_place, "modified its argument `scores`"),
]


@pytest.mark.parametrize(("fn", "message"), WRONG_ROW)
def test_row_mask_mistakes_are_named(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_row_mask(fn)


@pytest.mark.parametrize("seed", SEEDS)
def test_row_mask_ranked_down_the_columns_is_named_on_the_first_case(seed):
    what, scores, _ = lab._row_cases(seed)[0]
    assert scores.shape[0] != scores.shape[1]  # not square: the mask still has the shape
    with pytest.raises(LabCheckError, match=rf"\[{what}\].*within each \*column\*"):
        check_row_mask(row_mask_columns, seed=seed)


def test_row_mask_count_hint_names_half_up_rounding_and_round_half_to_even():
    # 0.125 · 20 = 2.5: ceil and floor(x + 0.5) both give 3, round() gives 2
    hint = lab._count_hint(3, 0.125, 20)
    assert "rounds .5 up (math.ceil or floor(x + 0.5)) to 3" in hint
    assert "round(2.5) = 2" in hint and "math.ceil gives" not in hint
    assert "math.ceil gives 4" in lab._count_hint(4, 0.33, 10)  # 3.3: ceil only
    assert "int() gives 3" in lab._count_hint(3, 0.3, 12)  # 3.6: int only


def test_row_mask_cases_reach_both_ends_of_the_sparsity_range():
    for seed in SEEDS:
        sparsities = {p for _, _, p in lab._row_cases(seed)}
        assert {0.0, 1.0} <= sparsities
    scores = torch.rand(3, 5, generator=torch.Generator().manual_seed(0))
    assert not lab.row_mask(scores, 1.0).any() and lab.row_mask(scores, 0.0).all()


# ---- 3. nm_mask ------------------------------------------------------------------------------


def nm_ties_later(w, n=2, m=4):  # what topk may do: ties to the *later* position
    out, d = w.shape
    return (
        _nm(w.abs().reshape(out, d // m, m).flip(2).reshape(out, d), n, m)
        .view(out, d // m, m)
        .flip(2)
        .reshape(out, d)
    )


def nm_in_place(w, n=2, m=4):
    mask = nm_mask_ok(w, n, m)
    w.mul_(mask)
    return mask


WRONG_NM = [
    (lambda w, n=2, m=4: _nm(-w.abs(), n, m), r"keeps the \d \*smallest\*"),
    (lambda w, n=2, m=4: _nm(w, n, m), r"by w, not \|w\|"),
    (lambda w, n=2, m=4: _nm(w.abs().T, n, m).T, r"along the outputs"),
    (lambda w, n=2, m=4: lab.row_mask(w.abs(), 1 - n / m), "whole row"),
    (lambda w, n=2, m=4: _nm(w.abs(), 2, 4), "whatever n and m are"),
    (lambda w, n=2, m=4: ~nm_mask_ok(w, n, m), "inverted"),
    (nm_ties_later, "among equal"),
    (lambda w, n=2, m=4: nm_mask_ok(w, n, m).to(torch.uint8), r"\.bool\(\)"),
    (lambda w, n=2, m=4: nm_mask_ok(w, n, m)[:, 1:], "returned shape"),
    (nm_in_place, "modified its argument `w`"),
]


@pytest.mark.parametrize(("fn", "message"), WRONG_NM)
def test_nm_mask_mistakes_are_named(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_nm_mask(fn)


def test_nm_mask_strided_groups_and_m_minus_n_are_named():
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))

    def strided(w, n, m):
        perm = torch.arange(16).view(m, 16 // m).T.reshape(-1)
        return _nm(w.abs()[:, perm], n, m)[:, torch.argsort(perm)]

    for fn, n, m, message in ((strided, 2, 4, "strided"), (lambda w, n, m: _nm(w.abs(), 3, 4),
                              1, 4, r"keeps m − n = 3")):  # fmt: skip
        wrong = fn(w, n, m)
        matches = [why for value, why in lab._nm_mistakes(w, n, m) if torch.equal(wrong, value)]
        assert matches and message.replace("\\", "") in matches[0]


# ---- 4. merge_lora ---------------------------------------------------------------------------


def merge_in_place(w, a, b, alpha, rank):
    return w.add_((alpha / rank) * (b @ a))


WRONG_MERGE = [
    (lambda w, a, b, alpha, r: w + (alpha / r) * (a.T @ b.T), r"\(B A\)ᵀ = Aᵀ Bᵀ"),
    (lambda w, a, b, alpha, r: w + b @ a, r"forgot the scale α/r"),
    (lambda w, a, b, alpha, r: w + (alpha // r) * (b @ a), r"α // r or int\(α/r\) gives"),
    (lambda w, a, b, alpha, r: w + int(alpha / r) * (b @ a), r"α // r or int\(α/r\) gives"),
    (lambda w, a, b, alpha, r: w + (r / alpha) * (b @ a), "scales by r/α"),
    (lambda w, a, b, alpha, r: w + alpha * (b @ a), "scales by α alone"),
    (lambda w, a, b, alpha, r: w + (b @ a) / r, "scales by 1/r alone"),
    (lambda w, a, b, alpha, r: (alpha / r) * (b @ a), "update .* alone"),
    (lambda w, a, b, alpha, r: w - (alpha / r) * (b @ a), "subtracts the update"),
    (lambda w, a, b, alpha, r: a @ b if a.shape[1] == b.shape[0] else w[:0], "returned shape"),
    (lambda w, a, b, alpha, r: merge_ok(w.float(), a.float(), b.float(), alpha, r), "dtype"),
    (lambda w, a, b, alpha, r: merge_ok(w, a, b, alpha, r) * 1.01, r"expected W \+ \(α/r\)"),
    (merge_in_place, "modified its argument `w`"),
]


@pytest.mark.parametrize(("fn", "message"), WRONG_MERGE)
def test_merge_lora_mistakes_are_named(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_merge_lora(fn)


# ---- the reference's own argument checks -----------------------------------------------------


def test_reference_rejects_bad_arguments():
    w, a, b = torch.zeros(4, 6), torch.zeros(2, 6), torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"a must be \(rank, in\)"):
        lab.merge_lora(w, a.T, b, 2.0, 2)
    with pytest.raises(ValueError, match="rank must be in 1..4"):
        lab.merge_lora(w, a, b, 2.0, 5)
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        lab.merge_lora(w.long(), a, b, 2.0, 2)
    with pytest.raises(ValueError, match="w must be a 2-D"):
        lab.merge_lora(w[0], a, b, 2.0, 2)
    with pytest.raises(ValueError, match="alpha must be"):
        lab.merge_lora(w, a, b, -1.0, 2)
    with pytest.raises(ValueError, match="w contains NaN"):
        lab.nm_mask(torch.full((2, 4), math.nan))
    with pytest.raises(ValueError, match="not a multiple of m = 4"):
        lab.nm_mask(torch.zeros(2, 6))


@pytest.mark.parametrize("seed", SEEDS)
def test_merge_lora_integer_scale_is_named_on_the_first_case(seed):
    what, *_, alpha, rank = lab._lora_cases(seed)[0]
    assert math.floor(alpha / rank) not in (0, 1, alpha / rank)
    for fn in (lambda w, a, b, alpha, r: w + (alpha // r) * (b @ a),
               lambda w, a, b, alpha, r: w + int(alpha / r) * (b @ a)):  # fmt: skip
        with pytest.raises(LabCheckError, match=rf"\[{what}\].*rounds the scale down"):
            check_merge_lora(fn, seed=seed)


def test_merge_lora_integer_scale_of_one_names_both_mistakes():
    w, a, b = torch.randn(4, 6), torch.randn(2, 6), torch.randn(4, 2)
    whys = [why for value, why in lab._lora_mistakes(w, a, b, 3.0, 2)
            if torch.allclose(value, (w + b @ a).double())]  # fmt: skip
    assert whys[0].startswith("forgot the scale α/r, or rounds the scale down")
    assert "gives 1 instead of 3/2 = 1.5" in whys[0]
