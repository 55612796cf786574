"""LLM quantization lab checkers: the reference and plain student-style solutions pass on the
visible and hidden seeds; each wrong kind is rejected with the message naming it (zero point
per row / per tensor / none, groups along the wrong axis, scale from max|w|, 2^b for 2^b − 1,
no clamping, nibble order, unmasked high nibble, α on the wrong side, max over the wrong
axis, W divided instead of multiplied, …)."""

from __future__ import annotations

import pytest
import torch

from minicompress.checkpoint import unpack_nibbles
from minicompress.labs import LabCheckError
from minicompress.labs import llm_quantization as lab
from minicompress.labs.llm_quantization import (
    check_dequantize_groups,
    check_pack_int4,
    check_quantize_groups,
    check_smooth,
    check_smoothquant_scales,
    check_unpack_int4,
)

# ---- 1. quantize_groups: a plain solution, and wrong versions built from its pieces --------


def _quantizer(
    layout="groups", extend=True, scale_of=None, zero_of=None, code_of=None, ignore_clip=False
):
    """A group quantizer in the style a student writes; each argument swaps in one mistake."""

    def quantize(w, bits, group_size, clip=1.0):
        out, n = w.shape
        g, levels = group_size, 2**bits - 1
        if layout == "groups":
            v = w.reshape(out, n // g, g)
            lo, hi = v.amin(-1), v.amax(-1)
        elif layout == "row":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        elif layout == "row-broadcast":
            lo = w.amin(1, keepdim=True).expand(out, n // g)
            hi = w.amax(1, keepdim=True).expand(out, n // g)
        elif layout == "tensor":
            lo, hi = w.min(), w.max()
        elif layout == "transposed":
            v = w.t().reshape(n, out // g, g)
            lo, hi = v.amin(-1), v.amax(-1)
        elif layout == "strided":
            v = w.reshape(out, g, n // g)
            lo, hi = v.amin(1), v.amax(1)
        if extend:
            lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        if not ignore_clip:
            lo, hi = clip * lo, clip * hi
        scale = (hi - lo) / levels if scale_of is None else scale_of(lo, hi, bits)
        zero = torch.round(-lo / scale) if zero_of is None else zero_of(lo, scale, bits)
        if layout in ("transposed",) or scale.shape != (out, n // g):
            return torch.zeros_like(w, dtype=torch.uint8), scale, zero
        s = scale.repeat_interleave(g, 1)
        z = zero.repeat_interleave(g, 1)
        if code_of is None:
            q = torch.clamp(torch.round(w / s) + z, 0, levels).to(torch.uint8)
        else:
            q = code_of(w, s, z, levels)
        return q, scale, zero  # float, integer-valued

    return quantize


quantize_ok = _quantizer()


def quantize_ok_float_zero(w, bits, group_size, clip=1.0):
    q, scale, zero = quantize_ok(w, bits, group_size, clip)
    return q.long(), scale, zero.long()  # other integer dtypes are fine


WRONG_QUANTIZE = [
    (_quantizer(zero_of=lambda lo, s, b: torch.zeros_like(s)), "forgot the zero point"),
    (_quantizer(zero_of=lambda lo, s, b: torch.full_like(s, 2 ** (b - 1))), "fixed zero point"),
    (_quantizer(zero_of=lambda lo, s, b: torch.round(lo / s)), "sign of the zero"),
    (
        _quantizer(zero_of=lambda lo, s, b: torch.round(-lo.amin(1, keepdim=True) / s)),
        r"from the \*row's\* minimum",
    ),
    (
        _quantizer(
            zero_of=lambda lo, s, b: torch.round(-lo / s).amax(1, keepdim=True).expand_as(s)
        ),
        "every group of a row has the same zero point",
    ),
    (
        _quantizer(zero_of=lambda lo, s, b: torch.round(-lo.amin() / s.amax()).expand_as(s)),
        r"one zero point for the whole tensor \(per-tensor\)",
    ),
    (
        _quantizer(
            zero_of=lambda lo, s, b: torch.round(-lo.amin(1, keepdim=True) / s).clamp(0, 2**b - 1)
        ),
        r"from the \*row's\* minimum",
    ),
    (_quantizer(zero_of=lambda lo, s, b: torch.floor(-lo / s)), "truncates the zero point"),
    (_quantizer(zero_of=lambda lo, s, b: -lo / s), "holds non-integers"),
    (_quantizer(layout="row"), r"one scale per row \(per output channel\)"),
    (_quantizer(layout="row-broadcast"), "one scale per row"),
    (_quantizer(layout="tensor"), r"one scale for the whole tensor \(per-tensor\)"),
    (
        _quantizer(layout="transposed"),
        r"groups run along the output dimension|consecutive \*outputs\*",
    ),
    (_quantizer(layout="strided"), r"strided|wrong dimension"),
    (_quantizer(scale_of=lambda lo, hi, b: (hi - lo) / 2**b), r"divides the range by 2\^b"),
    (
        _quantizer(scale_of=lambda lo, hi, b: torch.maximum(-lo, hi) / (2**b - 1)),
        r"takes the scale from max\|w\|",
    ),
    (
        _quantizer(scale_of=lambda lo, hi, b: torch.maximum(-lo, hi) / (2 ** (b - 1) - 1)),
        r"symmetric scale max\|w\|",
    ),
    (_quantizer(extend=False), "did not extend the range to contain 0"),
    (_quantizer(ignore_clip=True), "ignores clip"),
    (_quantizer(code_of=lambda w, s, z, L: (torch.round(w / s) + z).long()), "does not clamp"),
    (
        _quantizer(code_of=lambda w, s, z, L: (torch.round(w / s) + z).long().to(torch.uint8)),
        "converts to uint8 without clamping",
    ),
    (
        _quantizer(
            code_of=lambda w, s, z, L: torch.clamp(
                (torch.round(w / s) + z).long().to(torch.uint8), 0, L
            )
        ),  # fmt: skip
        "converts to uint8 before clamping",
    ),
    (
        _quantizer(
            code_of=lambda w, s, z, L: torch.clamp(torch.round(w / s) + z, 0, L + 1).to(torch.uint8)
        ),  # fmt: skip
        r"clamps to \[0, 2\^b\]",
    ),
    (
        _quantizer(
            code_of=lambda w, s, z, L: torch.clamp(torch.round(w / s), 0, L).to(torch.uint8)
        ),
        "leaves out the zero point",
    ),
    (
        _quantizer(code_of=lambda w, s, z, L: torch.clamp(torch.floor(w / s) + z, 0, L).long()),
        r"truncates \(floor\)",
    ),
    (
        _quantizer(code_of=lambda w, s, z, L: torch.clamp(torch.round(w / s) + z, 0, L)),
        "q is a torch.float32",
    ),
]


def quantize_grouped_q(w, bits, group_size, clip=1.0):
    q, scale, zero = quantize_ok(w, bits, group_size, clip)
    return q.reshape(w.shape[0], -1, group_size), scale, zero


def quantize_keepdim(w, bits, group_size, clip=1.0):
    q, scale, zero = quantize_ok(w, bits, group_size, clip)
    return q, scale[..., None], zero[..., None]


def quantize_mutating(w, bits, group_size, clip=1.0):
    result = quantize_ok(w.clone(), bits, group_size, clip)
    w.zero_()
    return result


def quantize_two_values(w, bits, group_size, clip=1.0):
    return quantize_ok(w, bits, group_size, clip)[:2]


WRONG_QUANTIZE += [
    (quantize_grouped_q, r"q\.reshape\(out, in\)"),
    (quantize_keepdim, "keepdim=False"),
    (quantize_mutating, "modified its argument `w`"),
    (quantize_two_values, r"tuple \(q, scale, zero\)"),
]


# ---- 2. dequantize_groups ---------------------------------------------------------------------


def dequantize_ok(q, scale, zero):
    g = q.shape[1] // scale.shape[1]
    s, z = scale.repeat_interleave(g, 1), zero.repeat_interleave(g, 1)
    return s * (q.float() - z.float())


def dequantize_distributed(q, scale, zero):  # S q − S Z: a different rounding, still right
    g = q.shape[1] // scale.shape[1]
    s, z = scale.repeat_interleave(g, 1), zero.float().repeat_interleave(g, 1)
    return s * q.float() - s * z


def _dequantizer(f):
    def dequantize(q, scale, zero):
        g = q.shape[1] // scale.shape[1]
        return f(q, scale, zero, g)

    return dequantize


WRONG_DEQUANTIZE = [
    (
        _dequantizer(
            lambda q, s, z, g: (q - z.repeat_interleave(g, 1)).float() * s.repeat_interleave(g, 1)
        ),
        "uint8, which wraps around",
    ),  # fmt: skip
    (_dequantizer(lambda q, s, z, g: q.float() * s.repeat_interleave(g, 1)), "forgot the zero"),
    (
        _dequantizer(
            lambda q, s, z, g: (
                (q.float() + z.float().repeat_interleave(g, 1)) * s.repeat_interleave(g, 1)
            )
        ),
        "adds the zero point",
    ),  # fmt: skip
    (
        _dequantizer(lambda q, s, z, g: (q.float() - z.float().repeat(1, g)) * s.repeat(1, g)),
        r"tiles the groups' scales and zero points",
    ),
    (
        _dequantizer(
            lambda q, s, z, g: (q.float() - z.float().repeat_interleave(g, 1)) * s.repeat(1, g)
        ),
        "tiles the scales",
    ),  # fmt: skip
    (
        _dequantizer(lambda q, s, z, g: q.long() - z.long().repeat_interleave(g, 1)),
        "returned a torch.int64 tensor",
    ),
    (
        _dequantizer(lambda q, s, z, g: dequantize_ok(q, s, z).reshape(q.shape[0], -1, g)),
        r"reshape\(out, in\)",
    ),
    (_dequantizer(lambda q, s, z, g: dequantize_ok(q, s, z) + 1e-3), r"expected S\(q − Z\)"),
]


def dequantize_mutating(q, scale, zero):
    out = dequantize_ok(q, scale, zero)
    scale.mul_(2)
    return out


WRONG_DEQUANTIZE.append((dequantize_mutating, "modified its argument `scale`"))


# ---- 3. pack_int4 / unpack_int4 ----------------------------------------------------------------


def pack_ok(q):
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def pack_arithmetic(q):  # q[2j] + 16 q[2j+1], computed in int64 then cast: also right
    q = q.long()
    return (q[:, 0::2] + 16 * q[:, 1::2]).to(torch.uint8)


def unpack_ok(packed):
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


def unpack_shift_then_mask(packed):
    p = packed.long()
    return torch.stack((p & 15, (p >> 4) & 15), dim=-1).flatten(-2)


WRONG_PACK = [
    (lambda q: q[:, 1::2] | (q[:, 0::2] << 4), "wrong order"),
    (lambda q: q[:, : q.shape[1] // 2] | (q[:, q.shape[1] // 2 :] << 4), r"pairs q\[j\] with"),
    (lambda q: q[:, 0::2] | (q[:, 1::2] << 8), "loses the high nibble"),
    (lambda q: q[:, 0::2] | q[:, 1::2], "without shifting"),
    (lambda q: q[0::2, :] | (q[1::2, :] << 4), "neighbouring rows"),
    (
        lambda q: q.long()[:, 0::2] | (q.long()[:, 1::2] << 4),
        "the right values, but as torch.int64",
    ),
    (lambda q: q.clone(), "Nothing was packed"),
    (lambda q: pack_ok(q) ^ 1, r"expected q\[2j\] \| q\[2j\+1\] << 4"),
]

WRONG_UNPACK = [
    (lambda p: torch.stack((p >> 4, p & 15), -1).flatten(-2), "wrong order"),
    (lambda p: torch.stack((p, p >> 4), -1).flatten(-2), "does not mask the high nibble"),
    (lambda p: torch.stack((p & 15, p & 0xF0), -1).flatten(-2), "shift it down"),
    (lambda p: torch.stack((p & 15, p.to(torch.int8) >> 4), -1).flatten(-2), "sign bit"),
    (lambda p: torch.cat((p & 15, p >> 4), -1), "all the low nibbles first"),
    (lambda p: unpack_nibbles(p, 2 * p.shape[-1]), "signed codes −8 … 7"),
    (lambda p: torch.stack((p & 15, p >> 4), -1), r"Flatten the pairs"),
    (lambda p: torch.cat((p & 15, p >> 4), 0), "interleave them along the last dimension"),
    (lambda p: unpack_ok(p).float(), "codes are integers"),
]


# ---- 4. SmoothQuant ----------------------------------------------------------------------------


def scales_ok(x, w, alpha):
    return x.abs().amax(dim=0) ** alpha / w.abs().amax(dim=0) ** (1 - alpha)


def smooth_ok(x, w, s):
    return x / s, w * s


def smooth_reciprocal(x, w, s):  # x · (1/s): rounds differently, still right
    inverse = 1.0 / s
    return x * inverse, w * s[None, :]


def _scales(f):
    def scales(x, w, alpha):
        ax, aw = x.abs().amax(0), w.abs().amax(0)
        return f(x, w, ax, aw, alpha)

    return scales


WRONG_SCALES = [
    (_scales(lambda x, w, ax, aw, a: aw**a / ax ** (1 - a)), "applies α to the wrong side"),
    (_scales(lambda x, w, ax, aw, a: aw ** (1 - a) / ax**a), "returns 1/s"),
    (_scales(lambda x, w, ax, aw, a: ax**a * aw ** (1 - a)), r"multiplies by max\|W_j\|"),
    (_scales(lambda x, w, ax, aw, a: ax**a / aw**a), "its exponent is 1 − α"),
    (_scales(lambda x, w, ax, aw, a: x.amax(0) ** a / aw ** (1 - a)), "without the absolute"),
    (
        _scales(lambda x, w, ax, aw, a: x.abs().amax(1) ** a / aw ** (1 - a)),
        "max of X over the wrong axis",
    ),
    (
        _scales(lambda x, w, ax, aw, a: ax**a / w.abs().amax(1) ** (1 - a)),
        "max of W over the wrong axis",
    ),
    (
        _scales(lambda x, w, ax, aw, a: x.abs().mean(0) ** a / w.abs().mean(0) ** (1 - a)),
        r"\*maxima\*",
    ),
    (_scales(lambda x, w, ax, aw, a: (ax**a / aw ** (1 - a))[None, :]), "no keepdim"),
    (_scales(lambda x, w, ax, aw, a: ax**a / aw ** (1 - a) * 1.01), r"expected max\|X_j\|\^α"),
]


def _smoother(f):
    def smooth(x, w, s):
        return f(x, w, s)

    return smooth


def smooth_mutating(x, w, s):
    w.mul_(s)
    return x / s, w


WRONG_SMOOTH = [
    (_smoother(lambda x, w, s: (x * s, w / s)), "divides W by s and multiplies X"),
    (_smoother(lambda x, w, s: (x / s, w / s)), r"divides W by s \(the product X Wᵀ changed\)"),
    (_smoother(lambda x, w, s: (x * s, w * s)), "multiplies X by s"),
    (_smoother(lambda x, w, s: (x, w * s)), "leaves X unscaled"),
    (_smoother(lambda x, w, s: (x / s, w)), "leaves W unscaled"),
    (_smoother(lambda x, w, s: (x / s, w * s[:, None])), "scales the rows of W"),
    (_smoother(lambda x, w, s: (x / s[:, None], w * s)), "scales the rows of X"),
    (_smoother(lambda x, w, s: (w * s, x / s)), r"the order is \(x_smooth, w_smooth\)"),
    (_smoother(lambda x, w, s: x / s), r"tuple \(x_smooth, w_smooth\)"),
    (smooth_mutating, "modified its argument `w`"),
]


def not_written(*args, **kwargs):
    raise NotImplementedError()


CHECKERS = {
    "quantize": check_quantize_groups,
    "dequantize": check_dequantize_groups,
    "pack": check_pack_int4,
    "unpack": check_unpack_int4,
    "scales": check_smoothquant_scales,
    "smooth": check_smooth,
}
WRONG = (
    [("quantize", f, m) for f, m in WRONG_QUANTIZE]
    + [("dequantize", f, m) for f, m in WRONG_DEQUANTIZE]
    + [("pack", f, m) for f, m in WRONG_PACK]
    + [("unpack", f, m) for f, m in WRONG_UNPACK]
    + [("scales", f, m) for f, m in WRONG_SCALES]
    + [("smooth", f, m) for f, m in WRONG_SMOOTH]
    + [(name, not_written, "not written yet") for name in CHECKERS]
)


@pytest.mark.parametrize(
    ("checker", "wrong", "message"), WRONG, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(WRONG)]
)
def test_each_wrong_kind_is_rejected_naming_the_mistake(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        CHECKERS[checker](wrong)


RIGHT = [
    ("quantize", lab.quantize_groups),
    ("quantize", quantize_ok),
    ("quantize", quantize_ok_float_zero),
    ("dequantize", lab.dequantize_groups),
    ("dequantize", dequantize_ok),
    ("dequantize", dequantize_distributed),
    ("pack", lab.pack_int4),
    ("pack", pack_ok),
    ("pack", pack_arithmetic),
    ("unpack", lab.unpack_int4),
    ("unpack", unpack_ok),
    ("unpack", unpack_shift_then_mask),
    ("scales", lab.smoothquant_scales),
    ("scales", scales_ok),
    ("smooth", lab.smooth),
    ("smooth", smooth_ok),
    ("smooth", smooth_reciprocal),
]


@pytest.mark.parametrize("seed", [0, 1, 2, 4242, 20_261_203])
def test_right_versions_pass_on_visible_and_hidden_seeds(seed, capsys):
    for checker, right in RIGHT:
        CHECKERS[checker](right, seed=seed)
    assert capsys.readouterr().out.count("✓") == len(RIGHT)


@pytest.mark.parametrize("seed", [1, 2, 4242])
def test_hidden_cases_reject_the_wrong_kinds_too(seed):
    for checker, wrong, _ in WRONG:
        with pytest.raises(LabCheckError):
            CHECKERS[checker](wrong, seed=seed)


def test_hidden_cases_vary_shapes_bits_and_alpha():
    def signature(seed):
        groups = [(tuple(w.shape), b, g, c) for _, w, b, g, c in lab._group_cases(seed)]
        smooth = [(tuple(x.shape), tuple(w.shape), a) for x, w, a in lab._smooth_cases(seed)]
        return groups, smooth

    assert len({str(signature(s)) for s in range(6)}) == 6


def test_reference_matches_the_quantization_module_and_the_checkpoint_packing():
    from minicompress import quantization as Q
    from minicompress.checkpoint import pack_nibbles

    w = torch.randn(6, 64)
    q, scale, zero = lab.quantize_groups(w, 4, 16)
    row = w[2, 16:32]
    qp = Q.calc_qparams(row, 4)
    assert torch.equal(q[2, 16:32], Q.quantize(row, qp))
    assert float(scale[2, 1]) == float(qp.scale) and int(zero[2, 1]) == int(qp.zero_point)
    w_hat = lab.dequantize_groups(q, scale, zero)
    assert (w_hat - w).abs().max() <= scale.max() / 2 + 1e-6  # half a step at most
    packed = lab.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 32)
    assert torch.equal(packed, pack_nibbles((q.to(torch.int16) - 8).to(torch.int8)))
    assert int(packed[0, 0]) == int(q[0, 0]) | int(q[0, 1]) << 4  # even index: low nibble
    assert torch.equal(lab.unpack_int4(packed), q)


def test_reference_smoothing_keeps_the_product_and_balances_the_ranges():
    x, w, _ = lab._smooth_cases(0)[2]  # alpha = 0.5
    s = lab.smoothquant_scales(x, w, 0.5)
    xs, ws = lab.smooth(x, w, s)
    assert torch.allclose(xs @ ws.T, x @ w.T, rtol=1e-4, atol=1e-4)
    # at alpha = 0.5 each channel's range becomes the same on both sides
    assert torch.allclose(xs.abs().amax(0), ws.abs().amax(0), rtol=1e-5)


def test_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="group_size = 5 must divide"):
        lab.quantize_groups(torch.randn(2, 8), 4, 5)
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        lab.quantize_groups(torch.ones(2, 8, dtype=torch.int64), 4, 4)
    with pytest.raises(ValueError, match="even last dimension"):
        lab.pack_int4(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        lab.pack_int4(torch.full((1, 2), 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="share in"):
        lab.smoothquant_scales(torch.randn(4, 3), torch.randn(5, 4), 0.5)
