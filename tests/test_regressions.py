"""Issue 16's silent wrong results and side effects, one regression test each: every case
now raises a clear error or returns the right value, and leaves no trace behind."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minicompress import backends, coding, distillation, zoo
from minicompress import quantization as Q
from minicompress.measure import size_in_bits
from minicompress.models import MLP
from minicompress.pruning import csr_state_dict
from minicompress.train import TrainConfig, fit

# ---- quantization -------------------------------------------------------------------------


def test_huge_ranges_give_a_finite_scale_and_an_exact_round_trip():
    x = torch.tensor([-3.0e38, 0.0, 3.0e38])
    qp = Q.calc_qparams(x)
    assert torch.isfinite(qp.scale).all()
    error = (Q.dequantize(Q.quantize(x, qp), qp) - x).abs()
    ulp = torch.finfo(torch.float32).eps * x.abs()  # float32 rounding of r / S and S(q − Z)
    assert torch.isfinite(error).all() and (error <= qp.scale / 2 + 2 * ulp).all()


def test_a_grid_beyond_float32_is_refused():
    with pytest.raises(ValueError, match="too wide"):
        Q.calc_qparams(torch.tensor([-3.4e38, 3.4e38]))


@pytest.mark.parametrize(
    ("scale", "zero_point", "match"),
    [(0.0, 0, "> 0"), (-1.0, 0, "> 0"), (math.nan, 0, "NaN"), (math.inf, 0, "inf"),
     (1.0, 256, r"\[qmin, qmax\]"), (1.0, -1, r"\[qmin, qmax\]")],
)  # fmt: skip
def test_qparams_validate_themselves(scale, zero_point, match):
    with pytest.raises(ValueError, match=match):
        Q.QParams(torch.tensor(scale), torch.tensor(zero_point), 8, 0, 255)


def test_qparams_refuse_a_float_zero_point_and_a_range_wider_than_the_bits():
    with pytest.raises(TypeError, match="zero_point"):
        Q.QParams(torch.tensor(1.0), torch.tensor(0.0), 8, 0, 255)
    with pytest.raises(ValueError, match="2\\^bits"):
        Q.QParams(torch.tensor(1.0), torch.tensor(0), 4, 0, 255)


def test_integer_range_refuses_zero_bits():
    with pytest.raises(ValueError, match="bits"):
        Q.integer_range(0, True)
    assert Q.integer_range(1, True) == (-1, 0)


@pytest.mark.parametrize("shift", [33, 40, 100])
def test_requantize_with_a_large_shift_rounds_to_zero(shift):
    acc = torch.tensor([1, -1, 2**31 - 1, -(2**31)])
    out = Q.requantize(acc, torch.tensor(2**30), torch.tensor(shift))
    exact = [round(a * 2**30 / 2 ** (31 + shift)) for a in acc.tolist()]
    assert out.tolist() == exact == [0, 0, 0, 0]


def test_requantize_of_an_eighth_is_exact():
    m0, shift = Q.quantize_multiplier(0.125)
    out = Q.requantize(torch.tensor([8, 80, -80]), torch.tensor(m0), torch.tensor(shift))
    assert out.tolist() == [1, 10, -10]


def test_requantize_refuses_out_of_range_operands():
    with pytest.raises(ValueError, match="acc"):
        Q.requantize(torch.tensor([2**40]), torch.tensor(2**30), torch.tensor(0))
    with pytest.raises(ValueError, match="shift"):
        Q.requantize(torch.tensor([1]), torch.tensor(2**30), torch.tensor(-31))


def test_per_channel_qparams_of_a_vector():
    qp = Q.calc_qparams(torch.tensor([-1.0, 2.0, 0.5]), axis=0)
    assert qp.scale.shape == (3,)


def test_calibrate_refuses_a_zero_batch_size():
    model = MLP((8,), 4, 2)
    with pytest.raises(ValueError, match="batch_size"):
        Q.calibrate(model, torch.rand(10, 4), batch_size=0)


# ---- coding, measure, distillation --------------------------------------------------------


def test_huffman_encode_of_a_generator_round_trips():
    encoded = coding.huffman_encode(s for s in [1, 2, 2, 3, 3, 3])
    assert coding.huffman_decode(encoded) == [1, 2, 2, 3, 3, 3]


def test_from_csr_refuses_duplicate_columns():
    with pytest.raises(ValueError, match="duplicate"):
        coding.from_csr([1.0, 2.0], [0, 0], [0, 2], (1, 3))


def test_size_in_bits_of_a_csr_state_dict_counts_what_is_stored():
    model = nn.Sequential(nn.Linear(100, 50, bias=False))
    with torch.no_grad():
        model[0].weight[:, 1:] = 0  # 50 non-zeros
    csr = csr_state_dict(model)["0.weight"]
    assert size_in_bits(csr) == 50 * 32 + 50 * 32 + 51 * 32  # values, columns, row pointers
    assert size_in_bits(csr) < size_in_bits(model[0].weight)


def test_soft_targets_at_tiny_temperature_are_one_hot_not_nan():
    p = distillation.soft_targets(torch.tensor([[6.0, 2.0, -1.0]]), 1e-40)
    assert torch.equal(p, torch.tensor([[1.0, 0.0, 0.0]]))


def test_kd_loss_at_an_overflowing_temperature_is_an_error():
    z = torch.tensor([[6.0, 2.0]])
    with pytest.raises(ValueError, match="too small"):
        distillation.kd_loss(z, z, None, 1e-40, 1.0)


# ---- backends: engine selection, batch size, side effects ---------------------------------


@pytest.mark.parametrize(
    ("engines", "expected"),
    [(["qnnpack", "onednn", "x86", "fbgemm"], "x86"), (["qnnpack", "none"], "qnnpack")],
)
def test_default_engine_follows_the_supported_engines(monkeypatch, engines, expected):
    # supported_engines is a property of the module's class: patch it there
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", engines)
    assert backends.default_engine() == expected


def test_default_engine_without_any_engine_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", [])
    with pytest.raises(RuntimeError, match="no int8 CPU engine"):
        backends.default_engine()


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)), torch.rand(
        40, 1, 4, 4
    )


def test_torch_int8_refuses_a_negative_batch_size():
    model, x = _tiny()
    with pytest.raises(ValueError, match="batch_size"):
        backends.torch_int8(model, x, batch_size=-1)


def test_torch_int8_restores_the_active_engine():
    model, x = _tiny()
    other = "qnnpack" if backends.default_engine() != "qnnpack" else None
    if other is None or other not in torch.backends.quantized.supported_engines:
        pytest.skip("needs two quantized engines")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = other
    try:
        backends.torch_int8(model, x)  # converts with default_engine(), then restores
        assert torch.backends.quantized.engine == other
    finally:
        torch.backends.quantized.engine = before


def test_onnx_int8_leaves_no_file_beside_the_output(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, x = _tiny()
    fp32 = backends.export_onnx(model, x, tmp_path / "m.onnx")
    mine = tmp_path / "m_int8.pre.onnx"
    mine.write_bytes(b"the user's own file")
    backends.onnx_int8(fp32, x, tmp_path / "m_int8.onnx")
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx", "m_int8.onnx", "m_int8.pre.onnx"
    ]  # fmt: skip


# ---- global random state ------------------------------------------------------------------


def test_fit_and_zoo_build_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = MLP((4,), 4, 2)
    fit(model, torch.rand(8, 4), torch.randint(0, 2, (8,)), TrainConfig(epochs=1, seed=7),
        progress=False)  # fmt: skip
    zoo.build("lenet300")
    after = torch.rand(3)
    torch.manual_seed(123)
    MLP((4,), 4, 2)
    torch.rand(8, 4), torch.randint(0, 2, (8,))
    assert torch.equal(after, torch.rand(3))
    assert not torch.equal(after, expected)  # the draws before fit did count


def test_fit_gives_the_same_weights_as_before(monkeypatch):
    """Seeding inside fit still fixes the result; only the caller's generator is restored."""
    weights = []
    for outer in (1, 2):
        torch.manual_seed(0)
        model = MLP((4,), 4, 2)
        torch.manual_seed(outer)  # the caller's state must not matter
        fit(model, torch.ones(8, 4), torch.zeros(8, dtype=torch.int64),
            TrainConfig(epochs=2, seed=3), progress=False)  # fmt: skip
        weights.append(model.fc1.weight.detach().clone())
    assert torch.equal(*weights)


def test_zoo_hashes_and_loads_the_same_bytes(monkeypatch):
    real = torch.load
    seen = []

    def spy(f, *args, **kwargs):
        seen.append(type(f).__name__)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    zoo.pretrained("lenet300")
    assert seen == ["BytesIO"]  # not the path: the file is not read a second time


def test_torch_int8_on_an_arm_like_build_uses_qnnpack(monkeypatch):
    """With x86 gone from the list, the default engine is qnnpack and conversion uses it."""
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this PyTorch build has no qnnpack")
    monkeypatch.setattr(type(torch.backends.quantized), "supported_engines", ["qnnpack", "none"])
    model, x = _tiny()
    used = []
    real = torch.ao.quantization.get_default_qconfig_mapping
    monkeypatch.setattr(torch.ao.quantization, "get_default_qconfig_mapping",
                        lambda engine: used.append(engine) or real(engine))  # fmt: skip
    backends.torch_int8(model, x)
    assert used == ["qnnpack"]
