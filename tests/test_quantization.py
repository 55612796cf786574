"""minicompress.quantization against PyTorch's quantization kernels and observers, plus
hypothesis properties (error ≤ S/2 inside the range, values in [qmin, qmax], zero exact)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.quantization import (
    QParams,
    QuantizedLinear,
    calc_qparams,
    dequantize,
    fake_quantize,
    quantize,
    quantize_multiplier,
    requantize,
)

with warnings.catch_warnings():  # torch.ao.quantization is deprecated, but it is the reference
    warnings.simplefilter("ignore")
    from torch.ao.quantization import MinMaxObserver


def data(seed: int, shape=(1000,), scale: float = 3.0, shift: float = 0.5) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


@pytest.mark.parametrize("seed", range(5))
def test_asymmetric_8bit_matches_minmax_observer(seed):
    x = data(seed, scale=1 + seed, shift=seed - 2)
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    qp = calc_qparams(x, bits=8)
    assert qp.scale.item() == scale.item() and qp.zero_point.item() == zero_point.item()
    assert (qp.qmin, qp.qmax) == (0, 255)


@pytest.mark.parametrize("seed", range(5))
def test_quantize_equals_torch_quantize_per_tensor(seed):
    x = data(seed, shape=(200_000,))
    qp = calc_qparams(x)
    ours = quantize(x, qp)
    theirs = torch.quantize_per_tensor(x, qp.scale.item(), int(qp.zero_point), torch.quint8)
    assert ours.dtype == torch.uint8
    assert torch.equal(ours, theirs.int_repr())
    assert torch.equal(dequantize(ours, qp), theirs.dequantize())


def test_quantize_equals_torch_quantize_per_channel():
    w = data(0, shape=(16, 32)) * torch.logspace(-2, 1, 16).view(-1, 1)  # very different ranges
    qp = calc_qparams(w, bits=8, symmetric=True, axis=0)
    theirs = torch.quantize_per_channel(w, qp.scale, qp.zero_point, 0, torch.qint8)
    assert torch.equal(quantize(w, qp), theirs.int_repr())
    assert torch.equal(dequantize(quantize(w, qp), qp), theirs.dequantize())


@pytest.mark.parametrize("seed", range(3))
def test_fake_quantize_forward_and_gradient_equal_torch(seed):
    x = data(seed, shape=(50_000,)).requires_grad_()
    qp = calc_qparams(data(seed + 100, shape=(100,)), bits=4)  # narrower: some values clamp
    y = fake_quantize(x, qp)
    y.backward(torch.ones_like(y))
    x2 = x.detach().clone().requires_grad_()
    y2 = torch.fake_quantize_per_tensor_affine(
        x2, qp.scale.item(), int(qp.zero_point), qp.qmin, qp.qmax
    )
    y2.backward(torch.ones_like(y2))
    assert torch.equal(y, y2)
    assert torch.equal(x.grad, x2.grad)
    assert 0 < x.grad.sum() < x.numel()  # both kinds of positions were exercised


def test_per_channel_fake_quantize_equals_torch():
    w = (data(1, shape=(8, 20)) * torch.linspace(0.1, 5, 8).view(-1, 1)).requires_grad_()
    qp = calc_qparams(w.detach() * 0.8, bits=4, symmetric=True, axis=0)  # clamps the extremes
    y = fake_quantize(w, qp)
    y.sum().backward()
    w2 = w.detach().clone().requires_grad_()
    y2 = torch.fake_quantize_per_channel_affine(
        w2, qp.scale, qp.zero_point.int(), 0, qp.qmin, qp.qmax
    )
    y2.sum().backward()
    assert torch.equal(y, y2) and torch.equal(w.grad, w2.grad)


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=200),
    bits=st.integers(2, 16),
    symmetric=st.booleans(),
)
def test_round_trip_error_at_most_half_a_step_and_zero_exact(values, bits, symmetric):
    x = torch.tensor(values, dtype=torch.float32)
    qp = calc_qparams(x, bits=bits, symmetric=symmetric)
    q = quantize(x, qp)
    assert int(q.min()) >= qp.qmin and int(q.max()) <= qp.qmax
    error = (dequantize(q, qp) - x).abs()
    # S/2 from rounding, plus float32 rounding of x/S and S·q
    assert float(error.max()) <= 0.5 * float(qp.scale) * (1 + 1e-4) + 1e-6 * float(x.abs().max())
    zero = torch.zeros(1)
    assert dequantize(quantize(zero, qp), qp).item() == 0.0  # 0 is exactly representable


@settings(max_examples=200, deadline=None)
@given(m=st.floats(1e-9, 1e3, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_a_31_bit_fixed_point_form(m):
    m0, shift = quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31
    assert math.isclose(m0 * 2.0 ** -(31 + shift), m, rel_tol=2**-30)


def test_quantize_multiplier_example_from_the_paper_form():
    m0, shift = quantize_multiplier(0.3)  # 0.3 = 0.6 · 2^−1
    assert shift == 1 and m0 == round(0.6 * 2**31)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: calc_qparams(torch.randn(5), bits=0), ValueError, "bits"),
        (lambda: calc_qparams(torch.randn(5), bits=17), ValueError, "bits"),
        (lambda: calc_qparams(torch.randn(5), bits=1, symmetric=True), ValueError, "2..16"),
        (lambda: calc_qparams(torch.randn(5), bits=8.0), TypeError, "bits"),
        (lambda: calc_qparams(torch.tensor([1.0, math.nan])), ValueError, "NaN"),
        (lambda: calc_qparams(torch.tensor([1.0, math.inf])), ValueError, "inf"),
        (lambda: calc_qparams(torch.zeros(0)), ValueError, "empty"),
        (lambda: calc_qparams(torch.arange(5)), TypeError, "floating-point"),
        (lambda: calc_qparams(torch.randn(3, 4), axis=2), ValueError, "axis"),
        (lambda: quantize(torch.randn(3, 4), calc_qparams(torch.randn(5, 4), axis=0)),
         ValueError, "channels"),
        (lambda: quantize(torch.randn(3), "qp"), TypeError, "QParams"),
        (lambda: dequantize(torch.randn(3), calc_qparams(torch.randn(3))), TypeError, "integer"),
        (lambda: dequantize(torch.tensor([300], dtype=torch.int32), calc_qparams(torch.randn(3))),
         ValueError, "outside"),
        (lambda: quantize_multiplier(0.0), ValueError, "finite number > 0"),
        (lambda: quantize_multiplier(math.nan), ValueError, "finite number > 0"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_constant_tensor_gets_a_usable_scale():
    qp = calc_qparams(torch.zeros(10))
    assert qp.scale.item() > 0 and torch.equal(dequantize(quantize(torch.zeros(10), qp), qp),
                                               torch.zeros(10))  # fmt: skip


def test_qparams_is_a_value():
    qp = calc_qparams(torch.randn(4))
    assert isinstance(qp, QParams) and qp.axis is None and qp.bits == 8


def _layer_and_data():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=g) * 0.1)
        linear.bias.copy_(torch.randn(32, generator=g) * 0.1)
    x = torch.rand(256, 64, generator=g)  # non-negative, like images or ReLU outputs
    return linear, x, linear(x).detach()


def _torch_qlinear(linear, layer, in_qp, out_qp, per_channel):
    from torch.ao.nn.quantized import Linear as TorchQuantizedLinear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wqp = layer.weight_qp
        weight = linear.weight.detach()
        if per_channel:
            qw = torch.quantize_per_channel(weight, wqp.scale, wqp.zero_point, 0, torch.qint8)
        else:
            qw = torch.quantize_per_tensor(weight, wqp.scale.item(), 0, torch.qint8)
        ql = TorchQuantizedLinear(linear.in_features, linear.out_features)
        ql.set_weight_bias(qw, linear.bias.detach())
        ql.scale, ql.zero_point = out_qp.scale.item(), int(out_qp.zero_point)
        return ql


@pytest.mark.parametrize(("engine", "in_bits", "per_channel", "max_diff"), [
    ("qnnpack", 8, False, 0),  # integer bias + fixed-point rescale, like ours: bit-exact
    ("x86", 7, True, 1),  # float bias and float rescale: within one step
    ("x86", 7, False, 1),
])  # fmt: skip
def test_integer_only_linear_matches_pytorch_int8_kernels(engine, in_bits, per_channel, max_diff):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this PyTorch build has no {engine} engine")
    linear, x, y = _layer_and_data()
    in_qp, out_qp = calc_qparams(x, bits=in_bits), calc_qparams(y)
    layer = QuantizedLinear(linear, in_qp, out_qp, per_channel=per_channel)
    ours = layer(quantize(x, in_qp))
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        ql = _torch_qlinear(linear, layer, in_qp, out_qp, per_channel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qx = torch.quantize_per_tensor(
                x, in_qp.scale.item(), int(in_qp.zero_point), torch.quint8
            )
            theirs = ql(qx).int_repr()
    finally:
        torch.backends.quantized.engine = previous
    diff = (ours.int() - theirs.int()).abs()
    assert int(diff.max()) <= max_diff
    assert float((diff > 0).float().mean()) < 0.01


def test_integer_only_linear_is_close_to_float():
    linear, x, y = _layer_and_data()
    in_qp, out_qp = calc_qparams(x), calc_qparams(y)
    out = dequantize(QuantizedLinear(linear, in_qp, out_qp)(quantize(x, in_qp)), out_qp)
    assert float((out - y).abs().max()) < 3 * float(out_qp.scale)


def test_requantize_rounds_like_the_real_multiplier():
    acc = torch.arange(-10_000, 10_000, 7, dtype=torch.int32)
    m = 0.0123
    m0, shift = quantize_multiplier(m)
    got = requantize(acc, torch.tensor(m0), torch.tensor(shift))
    exact = acc.double() * m
    assert float((got.double() - exact).abs().max()) <= 0.5 + 1e-6


def test_quantized_linear_rejects_bad_arguments():
    linear, x, y = _layer_and_data()
    in_qp, out_qp = calc_qparams(x), calc_qparams(y)
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantizedLinear(torch.nn.Conv2d(1, 1, 1), in_qp, out_qp)
    with pytest.raises(ValueError, match="unsigned"):
        QuantizedLinear(linear, calc_qparams(x, symmetric=True), out_qp)
    with pytest.raises(TypeError, match="uint8"):
        QuantizedLinear(linear, in_qp, out_qp)(x)


def _small_model_and_data():
    from minicompress.models import MLP

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return (
        MLP((32,)),
        torch.rand(200, 1, 28, 28, generator=g),
        torch.randint(0, 10, (200,), generator=g),
    )


def test_calibrate_records_each_layer_input_range():
    from minicompress.quantization import calibrate

    model, x, _ = _small_model_and_data()
    ranges = calibrate(model, x)
    assert set(ranges) == {"fc1", "fc2"}
    assert ranges["fc1"] == (float(x.min()), float(x.max()))
    hidden = torch.relu(model.fc1(x.flatten(1))).detach()
    assert ranges["fc2"][0] == 0.0 and ranges["fc2"][1] == pytest.approx(float(hidden.max()))
    lo, hi = calibrate(model, x, method="percentile", percentile=99.0)["fc1"]
    assert ranges["fc1"][0] <= lo < hi < ranges["fc1"][1]


def test_post_training_quantization_equals_quantizing_by_hand():
    from minicompress.quantization import activation_qparams, calibrate, post_training_quantize

    model, x, _ = _small_model_and_data()
    ranges = calibrate(model, x)
    ptq = post_training_quantize(model, ranges, weight_bits=4, act_bits=8)
    # by hand: fake-quantize the input, quantized weights, ReLU, fake-quantize, quantized weights
    w = {}
    for name in ("fc1", "fc2"):
        weight = getattr(model, name).weight.detach()
        qp = calc_qparams(weight, bits=4, symmetric=True, axis=0)
        w[name] = dequantize(quantize(weight, qp), qp)
    h = fake_quantize(x.flatten(1), activation_qparams(*ranges["fc1"]))
    h = torch.relu(h @ w["fc1"].T + model.fc1.bias)
    out = fake_quantize(h, activation_qparams(*ranges["fc2"])) @ w["fc2"].T + model.fc2.bias
    torch.testing.assert_close(ptq(x).detach(), out.detach())
    assert not torch.equal(model.fc1.weight, ptq.fc1.weight)  # the original is untouched


def test_qat_trains_through_fake_quantization():
    from minicompress.quantization import calibrate, prepare_qat
    from minicompress.train import TrainConfig, fit

    model, x, y = _small_model_and_data()
    qat = prepare_qat(model, calibrate(model, x), weight_bits=3, act_bits=8)
    before = qat.fc1.parametrizations.weight.original.detach().clone()
    losses = fit(qat, x, y, TrainConfig(epochs=3, lr=0.05, batch_size=50), progress=False)
    assert losses[-1] < losses[0]
    assert not torch.equal(before, qat.fc1.parametrizations.weight.original)
    levels = torch.unique(qat.fc1.weight.detach()[0])  # one output channel: at most 2^3 values
    assert len(levels) <= 2**3


def test_model_helpers_reject_bad_arguments():
    from minicompress.quantization import calibrate, post_training_quantize

    model, x, _ = _small_model_and_data()
    with pytest.raises(ValueError, match="method"):
        calibrate(model, x, method="entropy")
    with pytest.raises(ValueError, match="no calibrated range"):
        post_training_quantize(model, {"fc1": (0.0, 1.0)})
    with pytest.raises(ValueError, match="bits"):
        post_training_quantize(model, calibrate(model, x), weight_bits=1)


def _mse(x: torch.Tensor, lo: float, hi: float, bits: int, symmetric: bool) -> float:
    qp = calc_qparams(torch.tensor([lo, hi]), bits=bits, symmetric=symmetric)
    return float(((dequantize(quantize(x, qp), qp) - x) ** 2).mean())


@pytest.mark.parametrize("bits, symmetric", [(4, True), (3, True), (4, False)])
def test_mse_clip_range_beats_min_max_and_any_other_fraction(bits, symmetric):
    from minicompress.quantization import mse_clip_range

    x = data(0, shape=(5000,), shift=0.0)  # Gaussian: long tails, so clipping pays at 3–4 bits
    if not symmetric:
        x = x.abs()
    lo, hi = mse_clip_range(x, bits=bits, symmetric=symmetric)
    top = float(x.abs().max())
    assert 0 < hi < 0.9 * top
    best = _mse(x, lo, hi, bits, symmetric)
    assert best < 0.8 * _mse(x, float(x.min()), float(x.max()), bits, symmetric)
    for f in (0.3, 0.5, 0.7, 1.0):  # no other fraction of the range does better
        assert best <= _mse(x, f * min(float(x.min()), 0.0), f * top, bits, symmetric) + 1e-9


def test_mse_calibration_clips_activation_ranges():
    from minicompress.quantization import calibrate, mse_clip_range

    model, x, _ = _small_model_and_data()
    minmax, mse = calibrate(model, x), calibrate(model, x, method="mse", bits=4)
    assert mse["fc2"][0] == 0.0 and 0 < mse["fc2"][1] <= minmax["fc2"][1]
    with pytest.raises(ValueError, match="steps"):
        mse_clip_range(x, bits=4, steps=0)
    with pytest.raises(ValueError, match="bits"):
        calibrate(model, x, method="mse", bits=0)


def test_packed_bytes_counts_bits_scales_and_biases():
    from minicompress.measure import size_in_bits
    from minicompress.models import LeNet300100
    from minicompress.quantization import packed_bytes

    model = LeNet300100()
    weights = 784 * 300 + 300 * 100 + 100 * 10
    biases, channels = 300 + 100 + 10, 300 + 100 + 10
    assert packed_bytes(model, 8) == weights + 4 * channels + 4 * biases
    assert packed_bytes(model, 4, per_channel=False) == weights // 2 + 4 * 3 + 4 * biases
    assert (
        packed_bytes(model, 3) == sum(-(-n * 3 // 8) for n in (235200, 30000, 1000)) + 8 * channels
    )
    assert packed_bytes(model, 16) < size_in_bits(model) // 8
    with pytest.raises(ValueError, match="bits"):
        packed_bytes(model, 1)
