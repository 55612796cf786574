"""minicompress.binarization: the popcount product against float matmul (exact, many n, both
kernels), α* = mean|w| against a grid and least squares, the STE against hardtanh's
gradient, clipping, bit packing, power-of-two and ternary weights, and bad input."""

from __future__ import annotations

import math
import platform
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import binarization as B
from minicompress.binarization import (
    BinaryConnectLinear,
    BinaryMLP,
    BinaryWeightLinear,
    XnorLinear,
    binarize,
    binarize_ste,
    binary_model_bytes,
    clip_latent_weights,
    float_model_bytes,
    pack_bits,
    power_of_two_quantize,
    ternarize,
    unpack_bits,
    xnor_matmul,
    xnor_matmul_numba,
    xnor_matmul_numba_blocked,
    xnor_matmul_numba_word_major,
    xnor_scale,
)


def word_major(a_packed: torch.Tensor, b_packed: torch.Tensor, n: int) -> torch.Tensor:
    """`xnor_matmul_numba_word_major` on the row-major operands the other kernels take."""
    bt = (
        b_packed.T.contiguous()
        if isinstance(b_packed, torch.Tensor) and b_packed.ndim == 2
        else b_packed
    )
    return xnor_matmul_numba_word_major(a_packed, bt, n)


try:
    import numba  # noqa: F401

    KERNELS = [xnor_matmul, xnor_matmul_numba, xnor_matmul_numba_blocked, word_major]
except ImportError:
    KERNELS = [xnor_matmul]

SIZES = [1, 2, 7, 63, 64, 65, 100, 127, 128, 129, 191, 1000, 1024, 3000]


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def signs(*shape: int, seed: int = 0) -> torch.Tensor:
    return binarize(randn(*shape, seed=seed))


# ---- sign and the straight-through estimator ------------------------------------------------


def test_binarize_maps_zero_to_plus_one_and_agrees_with_sign_elsewhere():
    w = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert binarize(w).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    w = randn(10_000)
    assert torch.equal(binarize(w), torch.sign(w))  # no exact zeros in randn
    assert binarize(w.double()).dtype == torch.float64


def test_ste_gradient_is_hardtanh_gradient_inside_and_zero_outside():
    w = (randn(1000) * 1.5).requires_grad_()
    upstream = randn(1000, seed=1)
    (binarize_ste(w) * upstream).sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    (F.hardtanh(w_ref) * upstream).sum().backward()
    assert torch.equal(w.grad, w_ref.grad)  # randn never hits ±1 exactly
    assert (w.grad[w.detach().abs() > 1] == 0).all() and (w.detach().abs() > 1).any()


def test_ste_gate_includes_the_boundary_and_forward_is_binarize():
    w = torch.tensor([-1.5, -1.0, -0.2, 0.0, 1.0, 1.0001], requires_grad=True)
    out = binarize_ste(w)
    out.sum().backward()
    assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


# ---- the optimal scale ----------------------------------------------------------------------


def error(w: torch.Tensor, alpha: torch.Tensor | float, b: torch.Tensor) -> float:
    return float(((w - alpha * b) ** 2).sum())


@pytest.mark.parametrize("seed", range(3))
def test_mean_abs_minimises_error_against_a_grid_and_least_squares(seed):
    w = randn(300, seed=seed) * 0.1 + 0.02 * seed
    b = binarize(w)
    alpha = xnor_scale(w)
    assert torch.isclose(alpha, w.abs().sum() / w.numel())
    grid = torch.linspace(0, 2 * float(alpha), 4001)
    errors = ((w[None, :] - grid[:, None] * b[None, :]) ** 2).sum(dim=1)
    assert abs(float(grid[errors.argmin()]) - float(alpha)) <= float(grid[1] - grid[0])
    assert error(w, alpha, b) <= float(errors.min()) + 1e-6
    lstsq = torch.linalg.lstsq(b[:, None].double(), w[:, None].double()).solution
    assert math.isclose(float(lstsq), float(alpha), rel_tol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=50),
       st.floats(0.5, 1.5))  # fmt: skip
def test_no_other_scale_or_sign_pattern_does_better(values, factor):
    w = torch.tensor(values, dtype=torch.float64)
    best = error(w, xnor_scale(w), binarize(w))
    assert best <= error(w, factor * xnor_scale(w), binarize(w)) + 1e-9
    flipped = binarize(w).clone()
    flipped[0] = -flipped[0]
    other_alpha = float((w * flipped).sum() / len(w))  # the best α for the other B
    assert best <= error(w, other_alpha, flipped) + 1e-9


def test_per_channel_scale_is_the_mean_abs_of_each_slice_and_never_worse():
    w = randn(16, 40) * torch.logspace(-2, 0, 16)[:, None]
    alpha = xnor_scale(w, axis=0)
    assert alpha.shape == (16,)
    assert torch.allclose(alpha, torch.stack([row.abs().mean() for row in w]))
    assert torch.allclose(xnor_scale(w, axis=1), w.abs().mean(dim=0))
    assert torch.allclose(xnor_scale(w, axis=-1), w.abs().mean(dim=0))
    b = binarize(w)
    assert error(w, alpha[:, None], b) < error(w, xnor_scale(w), b)
    conv = randn(8, 3, 5, 5)
    assert torch.allclose(xnor_scale(conv, axis=0), conv.abs().mean(dim=(1, 2, 3)))


# ---- layers, clipping, bytes ------------------------------------------------------------------


def test_layers_compute_what_their_formulas_say():
    x = randn(5, 20, seed=1)
    bc, bwn, xnor = (cls(20, 7) for cls in (BinaryConnectLinear, BinaryWeightLinear, XnorLinear))
    for layer in (bwn, xnor):
        layer.load_state_dict(bc.state_dict())
    w = bc.weight.detach()
    alpha = w.abs().mean(dim=1)
    assert torch.allclose(bc(x), x @ torch.sign(w).T)
    assert torch.allclose(bwn(x), (x @ torch.sign(w).T) * alpha, atol=1e-6)
    assert torch.allclose(xnor(x), (torch.sign(x) @ torch.sign(w).T) * alpha, atol=1e-6)


def test_latent_weights_beyond_one_get_no_gradient():
    layer = BinaryConnectLinear(10, 4)
    with torch.no_grad():
        layer.weight[0] = 1.5
    layer(randn(8, 10)).sum().backward()
    assert (layer.weight.grad[0] == 0).all() and (layer.weight.grad[1:] != 0).all()


def test_clip_latent_weights_clamps_binary_layers_only():
    model = BinaryMLP((32,), kind="binaryconnect")
    float_layer = torch.nn.Linear(3, 3)
    model.extra = float_layer
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    clip_latent_weights(model)
    assert model.fc1.weight.max() == 1.0 and model.fc2.weight.max() == 1.0
    assert model.bn1.weight.max() == 3.0 and float_layer.weight.max() == 3.0


def test_clipping_during_training_keeps_latent_weights_in_range():
    from minicompress.train import TrainConfig, fit

    x, y = randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    largest = {}
    for hook in (None, clip_latent_weights):
        model = BinaryMLP((32,), kind="binaryconnect")
        with torch.no_grad():
            for layer in (model.fc1, model.fc2):
                layer.weight.mul_(0.999 / layer.weight.abs().max())  # start close to ±1
        config = TrainConfig(epochs=2, lr=0.01, optimizer="adam")
        fit(model, x, y, config, after_step=hook, progress=False)
        weights = torch.cat([model.fc1.weight.flatten(), model.fc2.weight.flatten()])
        largest[hook] = float(weights.detach().abs().max())
    assert largest[None] > 1.0  # without the clamp, latent weights leave [−1, 1] ...
    assert largest[clip_latent_weights] == 1.0  # ... with it, they stop at the boundary


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_xnor_layer_packed_forward_equals_forward(kernel):
    if kernel == "numba":
        pytest.importorskip("numba")
    layer = XnorLinear(100, 30)
    x = randn(9, 100, seed=3)
    assert torch.allclose(layer.forward_packed(x, backend=kernel), layer(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["float", "binaryconnect", "bwn", "xnor"])
def test_binary_mlp_variants_share_the_float_shape(kind):
    model = BinaryMLP((64, 32), kind=kind)
    reference = BinaryMLP((64, 32), kind="float")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert model(randn(4, 1, 28, 28)).shape == (4, 10)


def test_bytes_of_a_1024_layer_are_32_times_smaller():
    layer = BinaryConnectLinear(1024, 1024)
    assert binary_model_bytes(layer) == 1024 * 1024 // 8
    assert float_model_bytes(layer) / binary_model_bytes(layer) == 32
    bwn = BinaryMLP((100,), kind="bwn")  # 784 → 100 → 10, BatchNorm after each
    packed = 8 * (100 * math.ceil(784 / 64) + 10 * math.ceil(100 / 64))
    bn = 4 * 4 * (100 + 10)  # γ, β, running mean, running variance
    assert binary_model_bytes(bwn) == packed + 4 * (100 + 10) + bn


# ---- bit packing ------------------------------------------------------------------------------


def test_pack_bits_layout():
    assert pack_bits(torch.tensor([1.0, -1.0, 1.0])).tolist() == [0b101]
    assert pack_bits(torch.ones(64)).tolist() == [-1]  # all 64 bits set
    assert pack_bits(-torch.ones(65)).tolist() == [0, 0]
    x = -torch.ones(130)
    x[64], x[129] = 1, 1
    assert pack_bits(x).tolist() == [0, 1, 2]
    assert pack_bits(signs(2, 3, 100)).shape == (2, 3, 2)
    assert pack_bits(torch.tensor([1, -1], dtype=torch.int8)).tolist() == [1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 4), st.integers(0, 10_000))
def test_pack_then_unpack_is_the_identity(n, rows, seed):
    x = signs(rows, n, seed=seed)
    assert torch.equal(unpack_bits(pack_bits(x), n), x)


# ---- the popcount product -------------------------------------------------------------------


def _float_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() @ b.double().T).to(torch.int64)  # float64 is exact for these integers


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("n", SIZES)
def test_xnor_matmul_equals_float_matmul_exactly(kernel, n):
    a, b = signs(6, n, seed=n), signs(11, n, seed=n + 1)
    got = kernel(pack_bits(a), pack_bits(b), n)
    assert got.dtype == torch.int64 and got.shape == (6, 11)
    assert torch.equal(got, _float_reference(a, b))


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_extremes_all_agree_and_all_disagree(kernel):
    for n in (1, 64, 65, 200):
        ones = torch.ones(1, n)
        pa = pack_bits(ones)
        assert kernel(pa, pa, n).item() == n
        assert kernel(pa, pack_bits(-ones), n).item() == -n


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_garbage_in_the_padding_bits_is_ignored(kernel):
    a, b = signs(3, 70), signs(4, 70, seed=1)
    pa, pb = pack_bits(a), pack_bits(b)
    pa[:, -1] |= 0b1111 << 10  # bits 64 + 10 .. 64 + 13: past n = 70
    assert torch.equal(kernel(pa, pb, 70), _float_reference(a, b))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 400), st.integers(0, 10_000))
def test_xnor_matmul_is_exact_for_random_shapes(m, k, n, seed):
    a, b = signs(m, n, seed=seed), signs(k, n, seed=seed + 1)
    expected = _float_reference(a, b)
    for kernel in KERNELS:
        assert torch.equal(kernel(pack_bits(a), pack_bits(b), n), expected)


def test_numba_kernel_compiles_to_a_popcount_instruction():
    pytest.importorskip("numba")
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("checks for the x86 popcnt instruction")
    xnor_matmul_numba(pack_bits(signs(1, 64)), pack_bits(signs(1, 64)), 64)
    kernel = B._numba_kernel
    asm = kernel.inspect_asm(kernel.signatures[0])
    assert re.search(r"\bpopcnt", asm) or "vpopcnt" in asm


def test_fast_kernels_equal_the_reference_on_random_inputs_serial_and_parallel():
    pytest.importorskip("numba")
    import numba

    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        for m, n, batch in [(1, 1, 1), (3, 65, 2), (4, 64, 1), (9, 200, 5), (37, 1000, 3)]:
            a, b = signs(batch, n, seed=m), signs(m, n, seed=m + 1)
            pa, pb = pack_bits(a), pack_bits(b)
            expected = xnor_matmul(pa, pb, n)
            assert torch.equal(xnor_matmul_numba_blocked(pa, pb, n), expected)
            assert torch.equal(xnor_matmul_numba_blocked(pa, pb, n, parallel=True), expected)
            bt = pb.T.contiguous()
            assert torch.equal(xnor_matmul_numba_word_major(pa, bt, n), expected)
            assert torch.equal(xnor_matmul_numba_word_major(pa, bt, n, parallel=True), expected)
            assert torch.equal(xnor_matmul_numba(pa, pb, n), expected)
    finally:
        numba.set_num_threads(threads)


def test_fast_kernels_read_noncontiguous_operands_and_check_their_arguments():
    pytest.importorskip("numba")
    pa, pb = pack_bits(signs(6, 300)), pack_bits(signs(10, 300, seed=1))
    expected = xnor_matmul(pa, pb, 300)
    got = xnor_matmul_numba_blocked(pa[::2], pb.t().contiguous().t(), 300)
    assert torch.equal(got, expected[::2])
    with pytest.raises(TypeError, match="parallel must be a bool"):
        xnor_matmul_numba_blocked(pa, pb, 300, parallel=1)
    assert torch.equal(xnor_matmul_numba_word_major(pa, pb.T, 300), expected)  # a strided bt
    with pytest.raises(TypeError, match="parallel must be a bool"):
        xnor_matmul_numba_word_major(pa, pb.T, 300, parallel=None)
    with pytest.raises(ValueError, match="words per row"):
        xnor_matmul_numba_word_major(pa, pb, 300)  # row-major by mistake: 5 words vs 10


def test_fast_kernels_vectorise_popcount_where_the_cpu_has_vpopcntdq():
    pytest.importorskip("numba")
    if "avx512_vpopcntdq" not in _cpu_flags():
        pytest.skip("needs AVX-512 VPOPCNTDQ")
    xnor_matmul_numba_blocked(pack_bits(signs(1, 1024)), pack_bits(signs(8, 1024)), 1024)
    xnor_matmul_numba_word_major(pack_bits(signs(1, 1024)), pack_bits(signs(8, 1024)).T, 1024)
    for kernel in (B._blocked_kernels[False], B._word_major_kernels[False]):
        asm = kernel.inspect_asm(kernel.signatures[0])
        assert re.search(r"vpopcntq\s[^\n]*%zmm", asm)  # 8 words per instruction


def _cpu_flags() -> set[str]:
    from minicompress.measure import _cpu

    return _cpu()[1]


def test_missing_numba_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    monkeypatch.setattr(B, "_numba_kernel", None)
    with pytest.raises(ImportError, match=r"pip install -c constraints.txt numba"):
        xnor_matmul_numba(pack_bits(signs(1, 8)), pack_bits(signs(1, 8)), 8)
    monkeypatch.setattr(B, "_blocked_kernels", {})
    monkeypatch.setattr(B, "_word_major_kernels", {})
    for kernel in (xnor_matmul_numba_blocked, xnor_matmul_numba_word_major):
        with pytest.raises(ImportError, match=r"pip install -c constraints.txt numba"):
            kernel(pack_bits(signs(1, 8)), pack_bits(signs(1, 8)), 8)


# ---- ternary and power-of-two weights -------------------------------------------------------


def test_ternarize_uses_threshold_and_mean_of_kept_magnitudes():
    w = randn(1000) * 0.05
    t, alpha = ternarize(w)
    delta = 0.7 * w.abs().mean()
    assert t.dtype == torch.int8 and set(t.unique().tolist()) == {-1, 0, 1}
    assert torch.equal(t != 0, w.abs() > delta)
    assert torch.equal(t[t != 0].float(), torch.sign(w[t != 0]))
    assert torch.isclose(alpha, w.abs()[w.abs() > delta].mean())
    grid = torch.linspace(0.5, 1.5, 201) * alpha
    errors = [error(w, a, t.float()) for a in grid]
    assert error(w, alpha, t.float()) <= min(errors) + 1e-7
    t0, a0 = ternarize(torch.zeros(5))
    assert (t0 == 0).all() and a0 == 0


def seed_formula(w: torch.Tensor) -> torch.Tensor:  # course erratum 8, as the seed writes it
    return torch.sign(w) * 2 ** (torch.sign(w) * torch.floor(torch.log2(w.abs())))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_power_of_two_outputs_are_signed_powers_nearest_in_the_log_domain(bits):
    w = randn(5000) * 0.1
    q = power_of_two_quantize(w, bits)
    exponents = torch.log2(q.abs())
    assert torch.equal(exponents, torch.round(exponents)) and torch.equal(
        torch.sign(q), torch.sign(w)
    )
    assert len(exponents.unique()) <= 2 ** (bits - 1) - 1
    e_max = int(torch.round(torch.log2(w.abs().max())))
    e_min = e_max - 2 ** (bits - 1) + 2
    assert exponents.max() == e_max and exponents.min() >= e_min
    # brute force: the nearest allowed exponent to log2|w|
    allowed = torch.arange(e_min, e_max + 1, dtype=torch.float32)
    distance = (torch.log2(w.abs())[:, None] - allowed[None, :]).abs()
    nearest = distance.min(dim=1).values
    assert torch.allclose((torch.log2(w.abs()) - exponents).abs(), nearest)
    inside = (torch.log2(w.abs()) >= e_min - 0.5) & (torch.log2(w.abs()) <= e_max + 0.5)
    assert ((torch.log2(w.abs()) - exponents).abs()[inside] <= 0.5).all()


def test_power_of_two_keeps_zero_and_powers_and_differs_from_the_seed_formula():
    w = torch.tensor([0.0, 0.25, -0.25, 0.5, -1.0, 0.375, -0.7])
    q = power_of_two_quantize(w, bits=4)
    assert q.tolist() == [0.0, 0.25, -0.25, 0.5, -1.0, 0.5, -0.5]
    assert torch.equal(power_of_two_quantize(q, bits=4), q)
    seed = seed_formula(w[1:])
    assert seed[1] == -4.0  # −0.25 ↦ −2^(+2): the exponent's sign flipped with the weight's
    assert seed[4] == 0.25  # 0.375 = 2^−1.42 truncated to 2^−2, not rounded to 2^−1
    assert power_of_two_quantize(w, 4, max_exponent=-2).abs().max() == 0.25
    assert (power_of_two_quantize(torch.zeros(3), 3) == 0).all()


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 0.0]), torch.tensor([0.5, -1.0]),
                                 torch.tensor([1, 2])])  # fmt: skip
def test_pack_bits_rejects_values_other_than_plus_minus_one(bad):
    with pytest.raises(ValueError, match=r"±1 values only"):
        pack_bits(bad)


def test_pack_bits_rejects_nan_bool_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        pack_bits(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="±1"):
        pack_bits(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="non-empty"):
        pack_bits(torch.ones(3, 0))


def test_xnor_matmul_rejects_n_that_does_not_fit_the_words():
    a = pack_bits(signs(2, 100))
    for n in (129, 1000, 64, 0):
        with pytest.raises(ValueError, match=r"does not fit 2 packed word\(s\): they hold 65..128"):
            xnor_matmul(a, a, n)
    with pytest.raises(TypeError, match="n must be an int"):
        xnor_matmul(a, a, 100.0)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_xnor_matmul_rejects_wrong_dtypes_and_shapes(kernel):
    x = signs(2, 100)
    with pytest.raises(TypeError, match="int64 tensor of packed bits"):
        kernel(x, x, 100)  # the ±1 floats themselves, not packed
    with pytest.raises(TypeError, match="int64 tensor of packed bits"):
        kernel(pack_bits(x).to(torch.int32), pack_bits(x), 100)
    with pytest.raises(ValueError, match="words per row"):
        kernel(pack_bits(x), pack_bits(signs(2, 200)), 100)
    with pytest.raises(ValueError, match="2-d"):
        kernel(pack_bits(x)[0], pack_bits(x), 100)


def test_float_functions_reject_nan_integers_and_empty():
    for fn in (binarize, xnor_scale, ternarize, lambda w: power_of_two_quantize(w, 4)):
        with pytest.raises(ValueError, match="NaN"):
            fn(torch.tensor([1.0, float("nan")]))
        with pytest.raises(TypeError, match="floating-point"):
            fn(torch.tensor([1, -1]))
        with pytest.raises(ValueError, match="empty"):
            fn(torch.empty(0))
    with pytest.raises(TypeError, match="floating-point"):
        binarize_ste(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        xnor_scale(torch.ones(3, 3), axis=2)


def test_power_of_two_rejects_bad_bits_and_inf():
    for bits in (1, 9, 0):
        with pytest.raises(ValueError, match=r"bits must be in 2..8"):
            power_of_two_quantize(torch.ones(3), bits)
    with pytest.raises(TypeError, match="bits must be an int"):
        power_of_two_quantize(torch.ones(3), 4.0)
    with pytest.raises(ValueError, match="inf"):
        power_of_two_quantize(torch.tensor([1.0, float("inf")]), 4)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        BinaryMLP((10,), kind="ternary")
    with pytest.raises(ValueError, match="positive integers"):
        BinaryMLP((0,))
    with pytest.raises(TypeError, match="nn.Module"):
        clip_latent_weights(torch.ones(3))
    with pytest.raises(ValueError, match="backend must be"):
        XnorLinear(4, 2).forward_packed(torch.ones(1, 4), backend="cuda")
