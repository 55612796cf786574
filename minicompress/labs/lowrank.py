"""Checkers for the low-rank lab: test a student's SVD factorisation, payoff rank and
separable-convolution MAC count against `minicompress.lowrank` and
`minicompress.architecture` on randomized inputs, and raise `LabCheckError` saying what is
wrong, naming the usual mistakes when they are seen.

The lab's functions have the package's signatures:

- ``svd_factors(weight, rank) -> (A, B)`` with A of shape (r, n), B of shape (m, r) and
  B @ A = U_r S_r V_rᵀ, the truncated SVD (any split of S_r between the factors is accepted);
- ``payoff_rank(m, n) -> int``, the largest r with r(m + n) < mn;
- ``separable_macs(c_in, c_out, kernel, h_out, w_out) -> int``, depthwise H·W·C_in·K² plus
  pointwise H·W·C_in·C_out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import architecture, lowrank
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = ["check_payoff_rank", "check_separable_macs", "check_svd_factors"]


def _matrices(seed: int) -> list[tuple[Tensor, int]]:
    """(W, r): tall, wide and square float64 matrices with well separated singular values."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for m, n, r in ((12, 8, 3), (7, 10, 2), (9, 9, 4), (20, 6, 1), (5, 5, 5)):
        u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        p = min(m, n)
        s = torch.linspace(3.0, 0.3, p, dtype=torch.float64) * (1 + torch.rand(1, generator=g))
        cases.append(((u[:, :p] * s) @ v[:, :p].T, r))
    return cases


def _svd_mistakes(w: Tensor, r: int) -> list[tuple[Tensor, str]]:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    wrong = [
        (
            u[:, -r:] @ torch.diag(s[-r:]) @ vh[-r:],
            "keeps the r *smallest* singular values. torch.linalg.svd returns them in "
            "descending order, s_1 ≥ s_2 ≥ …: keep the first r (U[:, :r], S[:r], Vh[:r]). "
            "Eckart–Young: the error is then the discarded, smallest ones.",
        ),
        (
            u[:, : r + 1] @ torch.diag(s[: r + 1]) @ vh[: r + 1],
            "keeps r + 1 singular values: slice [:r], not [:r + 1].",
        ),
    ]
    if r > 1:
        wrong.append((u[:, : r - 1] @ torch.diag(s[: r - 1]) @ vh[: r - 1],
                      "keeps r − 1 singular values: slice [:r]."))  # fmt: skip
    v = vh.T  # the "V" of W = U S Vᵀ
    if v.shape[0] >= r and v.shape[1] == w.shape[1]:
        wrong.append((
            u[:, :r] @ torch.diag(s[:r]) @ v[:r],
            "multiplies U·S·V without the transpose: W = U S Vᵀ. torch.linalg.svd already "
            "returns Vh = Vᵀ, so the rows of Vh[:r] are the right singular vectors — do not "
            "transpose it again.",
        ))  # fmt: skip
    return wrong


def check_svd_factors(fn: Callable[[Tensor, int], tuple[Tensor, Tensor]], seed: int = 0) -> None:
    """Check ``fn(weight, rank) -> (A, B)``: A (r×n), B (m×r), B @ A = U_r S_r V_rᵀ."""
    cases = _matrices(seed)
    for w, r in cases:
        m, n = w.shape
        where = f"svd_factors(weight of shape ({m}, {n}), rank={r})"
        given = w.clone()
        out = _call(fn, where, given, r)
        _unchanged({"weight": w}, {"weight": given}, where)
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise LabCheckError(f"{where} must return two tensors (A, B), got {out!r:.60}")
        a, b = out
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            raise LabCheckError(f"{where} must return two tensors (A, B)")
        swapped = tuple(a.shape) == (m, r) and tuple(b.shape) == (r, n)
        if swapped and (m, r) != (r, n):
            raise LabCheckError(
                f"{where} returned (A, B) in the wrong order: A is the first layer, "
                f"shape (r, n) = ({r}, {n}), and B the second, shape (m, r) = ({m}, {r}); "
                "the layer computes B @ (A @ x)."
            )
        if tuple(a.shape) != (r, n) or tuple(b.shape) != (m, r):
            raise LabCheckError(
                f"{where} returned shapes {tuple(a.shape)} and {tuple(b.shape)}; expected A "
                f"of shape ({r}, {n}) and B of shape ({m}, {r}), so that B @ A is {m}×{n} "
                f"and the two layers hold r(m + n) = {r * (m + n)} weights."
            )
        product = (b.double() @ a.double()).detach()
        a_ref, b_ref = lowrank.svd_factors(w, r)
        expected = b_ref @ a_ref
        if not torch.allclose(product, expected, atol=1e-6, rtol=1e-6):
            for value, hint in _svd_mistakes(w, r):
                if torch.allclose(product, value, atol=1e-6, rtol=1e-6):
                    raise LabCheckError(f"{where}: your factorisation {hint}")
            err = float(torch.linalg.matrix_norm(w - product))
            best = lowrank.eckart_young_error(w, r)[0]
            raise LabCheckError(
                f"{where}: B @ A is not the truncated SVD U_r S_r V_rᵀ; its error ‖W − BA‖_F "
                f"is {err:.4g}, the best rank-{r} error (Eckart–Young) is {best:.4g}."
            )
    print(f"✓ svd_factors passed {len(cases)} randomized checks")


def check_payoff_rank(fn: Callable[[int, int], int], seed: int = 0) -> None:
    """Check ``fn(m, n)``: the largest r with r(m + n) < mn (0 if none)."""
    g = torch.Generator().manual_seed(seed)
    drawn = [tuple(int(v) for v in torch.randint(1, 900, (2,), generator=g)) for _ in range(20)]
    cases = [(300, 784), (4, 4), (6, 3), (1, 7), (10, 100), *drawn]
    for m, n in cases:
        where = f"payoff_rank(m={m}, n={n})"
        got = _call(fn, where, m, n)
        expected = lowrank.payoff_rank(m, n)
        if isinstance(got, bool) or not isinstance(got, int):
            if isinstance(got, float) and abs(got - m * n / (m + n)) < 1e-9:
                raise LabCheckError(
                    f"{where} returned the bound mn/(m + n) = {got:g} itself: the rank is the "
                    "largest *integer* strictly below it."
                )
            raise LabCheckError(f"{where} returned a {type(got).__name__}; return an int")
        if got == expected:
            continue
        if got == 0 and expected > 0:
            raise LabCheckError(
                f"{where} returned 0, expected {expected}. Two factors hold r(m + n) weights "
                "(A is r×n, B is m×r), not r·m·n: compare r(m + n) with mn."
            )
        if got == (m * n) // (m + n):
            raise LabCheckError(
                f"{where} returned {got}, expected {expected}: at r = mn/(m + n) the factors hold "
                "exactly mn weights and save nothing. The inequality is strict, r(m + n) < mn."
            )
        raise LabCheckError(
            f"{where} returned {got}, expected {expected}: the largest r with r(m + n) < mn "
            f"(here mn/(m + n) = {m * n / (m + n):.4g})."
        )
    print(f"✓ payoff_rank passed {len(cases)} checks")


def check_separable_macs(fn: Callable[[int, int, int, int, int], int], seed: int = 0) -> None:
    """Check ``fn(c_in, c_out, kernel, h_out, w_out)``: H·W·C_in·K² + H·W·C_in·C_out."""
    g = torch.Generator().manual_seed(seed)
    drawn = [
        tuple(int(v) for v in torch.randint(2, 40, (5,), generator=g)) for _ in range(10)
    ]  # fmt: skip
    cases = [(20, 50, 5, 8, 8), (3, 7, 3, 5, 4), *drawn]
    for c_in, c_out, k, h, w in cases:
        where = f"separable_macs(c_in={c_in}, c_out={c_out}, kernel={k}, h_out={h}, w_out={w})"
        got = _call(fn, where, c_in, c_out, k, h, w)
        expected = architecture.separable_macs(c_in, c_out, k, h, w)
        if got == expected and isinstance(got, int) and not isinstance(got, bool):
            continue
        depthwise, pointwise = h * w * c_in * k * k, h * w * c_in * c_out
        hints = {
            depthwise: "counts only the depthwise part: add the pointwise 1×1 convolution, "
            "H·W·C_in·C_out MACs, which mixes the channels.",
            pointwise: "counts only the pointwise part: add the depthwise K×K convolution, "
            "H·W·C_in·K² MACs (one filter per input channel).",
            h * w * c_in * c_out * k * k: "is the MAC count of an ordinary K×K convolution, "
            "H·W·C_out·C_in·K²; the separable one is depthwise H·W·C_in·K² + pointwise "
            "H·W·C_in·C_out.",
            h * w * c_out * k * k + pointwise: "gives the depthwise part C_out filters; it "
            "has one per *input* channel: H·W·C_in·K².",
            depthwise + h * w * c_in * c_out * k * k: "gives the pointwise part a K×K kernel; "
            "it is 1×1: H·W·C_in·C_out.",
            h * w * c_in * c_in * k * k + pointwise: "counts the depthwise part as an ordinary "
            "C_in → C_in convolution; with groups = C_in each output channel sees one input "
            "channel: H·W·C_in·K².",
        }
        if isinstance(got, int | float) and got in hints and got != expected:
            raise LabCheckError(f"{where} = {got}: your count {hints[got]}")
        raise LabCheckError(
            f"{where} returned {got!r}, expected {expected} (an int): depthwise "
            f"H·W·C_in·K² = {depthwise} plus pointwise H·W·C_in·C_out = {pointwise}."
        )
    print(f"✓ separable_macs passed {len(cases)} checks")
