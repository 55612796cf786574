"""Binarization: one bit per weight (and per activation), and a popcount kernel that uses it.

Chapter "Binarization" derives each piece:

- `binarize`: b = sign(w) ∈ {−1, +1}, with sign(0) = +1 so that every weight gets a bit;
  `binarize_ste` is the same in the forward pass with the straight-through estimator,
  gated on ``|w| ≤ 1``, in the backward pass (the gate is BNN's, Hubara et al. 2016;
  BinaryConnect, Courbariaux et al. 2015, passes the gradient through ungated);
- `xnor_scale`: the optimal scale α* = ‖W‖₁ / n of W ≈ αB (BWN / XNOR-Net, Rastegari
  et al. 2016), per tensor or per output channel;
- `BinaryConnectLinear`, `BinaryWeightLinear`, `XnorLinear`: the three trainable
  variants (binary weights; binary weights times α; binary weights and binary inputs),
  `clip_latent_weights` to keep their real-valued latent weights in [−1, 1], and
  `BinaryMLP` to compare them with a float network of the same shape and BatchNorm;
- `pack_bits` / `unpack_bits`: ±1 values as bits in 64-bit words (+1 ↦ 1, −1 ↦ 0);
- `xnor_matmul`: a @ bᵀ for ±1 matrices from their packed words, through
  x·y = 2·popcount(xnor(x, y)) − n = n − 2·popcount(x ⊕ y), exact for any n; in plain
  PyTorch (no popcount instruction, so slow), and `xnor_matmul_numba` compiled with numba
  to the CPU's ``popcnt`` instruction, and `xnor_matmul_numba_blocked`, 4 output features
  per pass so that LLVM vectorises the popcounts (``vpopcntq`` with AVX-512 VPOPCNTDQ),
  and `xnor_matmul_numba_word_major`, the weight's words stored transposed so that the
  vector runs over output features;
- neighbours: `ternarize` (TWN, Li & Liu 2016) and `power_of_two_quantize`
  (``w_q = sign(w)·2^round(log2|w|)``, Miyashita et al. 2016), done correctly — the seed
  posts' ``sign(x)·2^(sign(x)·floor(log2|x|))`` is course erratum 8.

References: Courbariaux, Bengio, David (2015); Hubara et al. (2016); Rastegari et al.
(2016); Bengio, Léonard, Courville (2013); Li & Liu (2016), *Ternary Weight Networks*;
Miyashita, Lee, Murmann (2016), *Convolutional Neural Networks using Logarithmic Data
Representation*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = [
    "BinaryConnectLinear",
    "BinaryMLP",
    "BinaryWeightLinear",
    "XnorLinear",
    "binarize",
    "binarize_ste",
    "binary_model_bytes",
    "clip_latent_weights",
    "float_model_bytes",
    "pack_bits",
    "power_of_two_quantize",
    "ternarize",
    "unpack_bits",
    "xnor_matmul",
    "xnor_matmul_numba",
    "xnor_matmul_numba_blocked",
    "xnor_matmul_numba_word_major",
    "xnor_scale",
]

WORD = 64  # bits per packed word (int64)
NUMBA_INSTALL = "pip install -c constraints.txt numba"


_SIGN = "its sign is undefined"


# ---- sign and the straight-through estimator ------------------------------------------------


def binarize(w: Tensor) -> Tensor:
    """b = sign(w) with sign(0) = +1: every entry becomes −1 or +1 (§ "Sign binarization").

    ``torch.sign`` maps 0 to 0, a third value that one bit cannot store. Returns the dtype
    of ``w``; no gradient flows (use `binarize_ste` to train).
    """
    w = check.float_tensor(w, "w", inf=True, why=_SIGN)
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


class _SignSTE(torch.autograd.Function):
    """Forward sign(w) (sign(0) = +1); backward ``∂L/∂w = ∂L/∂b · 1[|w| ≤ 1]``."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def binarize_ste(w: Tensor) -> Tensor:
    """sign(w) forward, straight-through gradient gated on ``|w| ≤ 1`` backward (§ "BinaryConnect").

    sign has derivative 0 almost everywhere, so training through it needs a stand-in: the
    gradient of hardtanh(w) = clamp(w, −1, 1), i.e. pass ∂L/∂b through where ``|w| ≤ 1`` and
    cancel it where ``|w| > 1`` (Bengio et al. 2013; Hubara et al. 2016). Works for weights
    and activations alike.
    """
    check.float_tensor(w, "w", empty=True, nan=True, inf=True)
    return _SignSTE.apply(w)


def xnor_scale(w: Tensor, axis: int | None = None) -> Tensor:
    """α* = ‖W‖₁ / n, the mean of ``|w|``: the scale minimising ‖W − αB‖², B = sign(W).

    Derived in § "The optimal scale".

    ``‖W − αB‖² = ‖W‖² − 2α Σ|w_i| + α² n`` for B = sign(W) (the best B for any α > 0), a
    parabola in α with its minimum at ``α* = Σ|w_i| / n`` (Rastegari et al. 2016, eq. 3–4).
    ``axis=None`` gives one α (a 0-d tensor); ``axis=k`` one per slice along dimension k
    (``axis=0``: one per output channel of a weight), a 1-d tensor. Differentiable.
    """
    w = check.float_tensor(w, "w", inf=True, why=_SIGN)
    axis = check.axis(axis, w.ndim)
    if axis is None:
        return w.abs().mean()
    return w.abs().movedim(axis, 0).flatten(1).mean(dim=1)  # (C, everything else) -> (C,)


# ---- layers ------------------------------------------------------------------------------


class BinaryConnectLinear(nn.Linear):
    """Linear layer whose forward pass uses sign(W) of real-valued latent weights W (BinaryConnect).

    y = x · sign(W)ᵀ (+ b). The optimiser updates the latent W through `binarize_ste`;
    `clip_latent_weights` keeps W in [−1, 1] after each step, since a latent weight would
    otherwise grow without changing its sign (Courbariaux et al. 2015, § 2.4). With W in
    [−1, 1] the gate of `binarize_ste` is always open, so the update is BinaryConnect's
    ungated one.
    Without bias by default: the BatchNorm that follows it has its own shift.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)

    def binary_weight(self) -> Tensor:
        """The weight the forward pass uses: sign(W) (times α in `BinaryWeightLinear`)."""
        return _SignSTE.apply(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.binary_weight(), self.bias)


class BinaryWeightLinear(BinaryConnectLinear):
    """Binary-weight layer with one scale per output channel: W ≈ α_i · sign(W_i) (BWN).

    y_i = α_i · x · sign(W_i) (+ b_i) with ``α_i = mean_j |W_ij|`` (`xnor_scale`, axis 0); the
    gradient flows through both α and sign, as in Rastegari et al. (2016).
    """

    def binary_weight(self) -> Tensor:
        alpha = self.weight.abs().mean(dim=1, keepdim=True)  # xnor_scale(W, axis=0), (out, 1)
        return alpha * _SignSTE.apply(self.weight)


class XnorLinear(BinaryWeightLinear):
    """Binary weights *and* binary inputs: y_i = α_i · sign(x) · sign(W_i) (+ b_i).

    The input is binarized with `binarize_ste` too, so the dot product is between ±1
    vectors and can run as `xnor_matmul` on packed bits (`forward_packed`). Use it on the
    output of a BatchNorm, so that sign(x) splits activations near their median.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(_SignSTE.apply(x), self.binary_weight(), self.bias)

    @torch.no_grad()
    def forward_packed(self, x: Tensor, backend: str = "torch") -> Tensor:
        """The same output computed on packed bits: α ⊙ xnor_matmul(pack(sign x), pack(sign W)).

        Equal to ``forward(x)`` up to float rounding of α (the integer dot products are
        exact). ``backend`` is ``"torch"`` (`xnor_matmul`) or ``"numba"``.
        """
        matmul = {"torch": xnor_matmul, "numba": xnor_matmul_numba}.get(backend)
        if matmul is None:
            raise ValueError(f"backend must be 'torch' or 'numba', got {backend!r}")
        x = check.float_tensor(x, "x", inf=True, why=_SIGN)
        a = pack_bits(binarize(x.reshape(-1, self.in_features)))  # (N, words)
        b = pack_bits(binarize(self.weight))  # (out, words)
        dots = matmul(a, b, self.in_features).to(x.dtype)  # (N, out), exact integers
        y = dots * xnor_scale(self.weight, axis=0)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


_BINARY_LAYERS = (BinaryConnectLinear,)  # every binary layer derives from this one


def clip_latent_weights(model: nn.Module) -> None:
    """Clamp the latent weights of every binary layer of ``model`` to [−1, 1], in place.

    Pass it to training as ``fit(..., after_step=clip_latent_weights)`` (§ "BinaryConnect").
    """
    check.module(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BINARY_LAYERS):
                module.weight.clamp_(-1.0, 1.0)


_KINDS = ("float", "binaryconnect", "bwn", "xnor")


class BinaryMLP(nn.Module):
    """Linear → BatchNorm (→ activation) blocks on flattened images, in four variants.

    ``kind``: ``"float"`` (nn.Linear, ReLU: the reference), ``"binaryconnect"``
    (`BinaryConnectLinear`, ReLU), ``"bwn"`` (`BinaryWeightLinear`, ReLU), ``"xnor"``
    (binary activations too: `BinaryWeightLinear` on the real-valued pixels, then
    `XnorLinear` layers, which binarize their BatchNorm-ed inputs, in place of ReLU).
    Every variant has the same shape, fc1 ... fcK each followed by bn1 ... bnK (the last
    BatchNorm scales the logits, as in BinaryConnect), and no Linear biases.
    """

    def __init__(
        self, hidden: Sequence[int] = (512, 512), kind: str = "float", in_features: int = 784,
        classes: int = 10,
    ) -> None:  # fmt: skip
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        sizes = (in_features, *tuple(hidden), classes)
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:  # one message for all
                raise ValueError(f"widths must be positive integers, got {sizes!r}")
        self.kind, self.hidden, self.n_layers = kind, tuple(hidden), len(sizes) - 1
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            self.add_module(f"fc{i}", self._layer(kind, i, n_in, n_out))
            self.add_module(f"bn{i}", nn.BatchNorm1d(n_out))

    @staticmethod
    def _layer(kind: str, i: int, n_in: int, n_out: int) -> nn.Linear:
        if kind == "float":
            return nn.Linear(n_in, n_out, bias=False)
        if kind == "binaryconnect":
            return BinaryConnectLinear(n_in, n_out)
        if kind == "bwn" or i == 1:  # the pixels stay real-valued (they are not ±1)
            return BinaryWeightLinear(n_in, n_out)
        return XnorLinear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (N, 1, 28, 28) -> (N, 784)
        for i in range(1, self.n_layers + 1):
            x = getattr(self, f"bn{i}")(getattr(self, f"fc{i}")(x))
            if i < self.n_layers and self.kind != "xnor":  # XnorLinear binarizes its input
                x = F.relu(x)
        return x


def float_model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and floating buffer at float32 (4 bytes each)."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return 4 * sum(t.numel() for t in tensors)


def binary_model_bytes(model: nn.Module) -> int:
    """Bytes with each binary layer's weight packed at one bit, the rest float32 (§ "Bit packing").

    A binary layer's (out, in) weight takes out · ⌈in / 64⌉ int64 words (8 bytes each),
    plus 4 bytes per output channel for α in `BinaryWeightLinear`/`XnorLinear`; every other
    parameter and floating buffer (biases, BatchNorm's γ, β, running mean and variance)
    counts 4 bytes per number.
    """
    check.module(model)
    total, packed = 0, set()
    for module in model.modules():
        if isinstance(module, _BINARY_LAYERS):
            out, n_in = module.weight.shape
            total += 8 * out * math.ceil(n_in / WORD)
            if isinstance(module, BinaryWeightLinear):
                total += 4 * out
            packed.add(id(module.weight))
    rest = [t for t in model.parameters() if id(t) not in packed]
    rest += [b for b in model.buffers() if b.is_floating_point()]
    return total + 4 * sum(t.numel() for t in rest)


# ---- bit packing and the popcount matrix product ----------------------------------------------


def pack_bits(x: Tensor) -> Tensor:
    """±1 values along the last dimension as bits of int64 words: (..., n) → (..., ⌈n/64⌉).

    Element j of a row lands in bit j mod 64 of word j // 64, as 1 for +1 and 0 for −1;
    the unused high bits of the last word are 0. Bit 63 is the int64 sign bit, so a word
    may print negative: it is a bit pattern, not a number. (§ "Bit packing")
    """
    if not isinstance(x, Tensor) or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must be a real tensor of ±1 values, got {check.describe(x)}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    if x.is_floating_point() and torch.isnan(x).any():
        raise ValueError("x contains NaN; pack_bits takes ±1 values only")
    if not ((x == 1) | (x == -1)).all():
        bad = x[(x != 1) & (x != -1)][0].item()
        raise ValueError(f"pack_bits takes ±1 values only (binarize first); found {bad}")
    n = x.shape[-1]
    words = math.ceil(n / WORD)
    bits = F.pad((x > 0).to(torch.int64), (0, words * WORD - n))  # (..., words·64), 0-padded
    bits = bits.reshape(*x.shape[:-1], words, WORD)  # (..., words, 64)
    shifts = torch.arange(WORD, dtype=torch.int64)
    # distinct bits: the sum is their OR (bit 63 counts as −2^63, and nothing overflows)
    return torch.bitwise_left_shift(bits, shifts).sum(dim=-1)


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """The ±1 float32 tensor (..., n) whose `pack_bits` is ``packed`` (..., ⌈n/64⌉)."""
    _check_packed(packed, "packed")
    _check_n(n, packed.shape[-1])
    shifts = torch.arange(WORD, dtype=torch.int64)
    bits = torch.bitwise_right_shift(packed[..., None], shifts) & 1  # (..., words, 64)
    bits = bits.flatten(-2)[..., :n]  # (..., n)
    return bits.to(torch.float32) * 2 - 1


def _check_packed(p: object, what: str) -> Tensor:
    if not isinstance(p, Tensor) or p.dtype != torch.int64:
        raise TypeError(f"{what} must be an int64 tensor of packed bits (pack_bits), got "
                        f"{check.describe(p)}")  # fmt: skip
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"{what} must have a non-empty last dimension of words, got shape "
                         f"{tuple(p.shape)}")  # fmt: skip
    return p


def _check_n(n: object, words: int) -> int:
    check.integer(n, "n")
    if not WORD * (words - 1) < n <= WORD * words:
        raise ValueError(
            f"n = {n} does not fit {words} packed word(s): they hold "
            f"{WORD * (words - 1) + 1}..{WORD * words} elements"
        )
    return n


def _check_matmul(a: object, b: object, n: object) -> tuple[Tensor, Tensor, int]:
    a, b = _check_packed(a, "a_packed"), _check_packed(b, "b_packed")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a_packed and b_packed must be 2-d (rows, words), got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")  # fmt: skip
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a_packed has {a.shape[1]} words per row but b_packed has {b.shape[1]}")
    return a, b, _check_n(n, a.shape[1])


def _last_word_mask(n: int) -> int:
    """The int64 whose low ((n − 1) mod 64) + 1 bits are set: the bits of the last word in use."""
    used = (n - 1) % WORD + 1
    return -1 if used == WORD else (1 << used) - 1


def _popcount64(x: Tensor) -> Tensor:
    """Set bits of each int64, by the SWAR bit tricks (no popcount instruction in PyTorch).

    Sum bits in pairs, then nibbles, then bytes; multiplying by 0x0101…01 adds the 8 byte
    counts into the top byte. ``>>`` on int64 is arithmetic, but every mask clears the
    copied sign bits, and the final count (≤ 64) has the sign bit clear.
    """
    x = x - (torch.bitwise_right_shift(x, 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + (torch.bitwise_right_shift(x, 2) & 0x3333333333333333)
    x = (x + torch.bitwise_right_shift(x, 4)) & 0x0F0F0F0F0F0F0F0F
    return torch.bitwise_right_shift(x * 0x0101010101010101, 56)  # wraps mod 2^64, as wanted


def xnor_matmul(a_packed: Tensor, b_packed: Tensor, n: int) -> Tensor:
    """a @ bᵀ for ±1 matrices a (M, n), b (N, n), from their packed bits; (M, N) int64, exact.

    For ±1 vectors, x·y = (#agreeing) − (#disagreeing) = 2·popcount(xnor(x, y)) − n, and
    since popcount(xnor) = n − popcount(x ⊕ y) over the n bits in use, also
    x·y = n − 2·popcount(x ⊕ y) (§ "The popcount identity"). XOR leaves the zero padding
    zero, so n need not be a multiple of 64; bits past n are ignored. Plain PyTorch: the
    popcount is `_popcount64`'s dozen elementwise operations per word, so this is slower
    than a float matmul (see `xnor_matmul_numba`).
    """
    a, b, n = _check_matmul(a_packed, b_packed, n)
    x = a[:, None, :] ^ b[None, :, :]  # (M, N, words)
    x[..., -1] &= _last_word_mask(n)
    return n - 2 * _popcount64(x).sum(dim=-1)


_numba_kernel = None
_blocked_kernels: dict[bool, object] = {}  # parallel -> compiled kernel
_word_major_kernels: dict[bool, object] = {}  # parallel -> compiled kernel
BLOCK = 4  # output features per pass over an activation row in `xnor_matmul_numba_blocked`


def _numba_popcount(what: str = "xnor_matmul_numba"):
    """numba and a jitted popcount of one int64: LLVM's ``ctpop`` (``popcnt`` on x86-64)."""
    try:
        import numba
        from numba import types
        from numba.extending import intrinsic
    except ImportError as err:
        raise ImportError(f"{what} needs numba; install it with `{NUMBA_INSTALL}`") from err

    @intrinsic
    def popcount(typingctx, x):
        if x != types.int64:
            return None

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])  # llvm.ctpop.i64: one popcnt on x86-64

        return types.int64(types.int64), codegen

    return numba, popcount


def _compile_numba_kernel():
    """Build the numba kernel once; popcount is LLVM's ``ctpop`` (the ``popcnt`` instruction)."""
    numba, popcount = _numba_popcount()

    @numba.njit(parallel=True, cache=False, nogil=True)
    def kernel(a, b, n, last_mask, out):
        rows, words = a.shape
        for j in numba.prange(b.shape[0]):  # output features in parallel: also helps batch 1
            for i in range(rows):
                count = 0
                for k in range(words - 1):
                    count += popcount(a[i, k] ^ b[j, k])
                count += popcount((a[i, words - 1] ^ b[j, words - 1]) & last_mask)
                out[i, j] = n - 2 * count

    return kernel


def _compile_blocked_kernel(parallel: bool):
    """Build `xnor_matmul_numba_blocked`'s kernel: ``BLOCK`` = 4 output features per pass.

    The innermost loop runs over the words of one activation row with nothing but xor,
    popcount and add, so LLVM vectorises it (``vpopcntq`` on 8 words at once where the CPU
    has AVX-512 VPOPCNTDQ); each activation word, loaded once, serves 4 weight rows. The
    padding bits are not masked in the loop (that would cost an ``and`` per word) but
    subtracted afterwards, once per output, and only when n is not a multiple of 64.
    """
    numba, popcount = _numba_popcount("xnor_matmul_numba_blocked")

    @numba.njit(nogil=True, fastmath=True, cache=False)
    def features(a, b, n, last_mask, out, start, stop):  # out[:, start:stop]
        batch, words = a.shape
        j = start
        while j + BLOCK <= stop:
            for i in range(batch):
                c0, c1, c2, c3 = 0, 0, 0, 0  # one counter per feature: BLOCK is 4
                for k in range(words):  # xor, popcount, add only: vectorised
                    x = a[i, k]
                    c0 += popcount(x ^ b[j, k])
                    c1 += popcount(x ^ b[j + 1, k])
                    c2 += popcount(x ^ b[j + 2, k])
                    c3 += popcount(x ^ b[j + 3, k])
                out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = c0, c1, c2, c3
            j += BLOCK
        for jj in range(j, stop):  # the last m mod 4 features
            for i in range(batch):
                c = 0
                for k in range(words):
                    c += popcount(a[i, k] ^ b[jj, k])
                out[i, jj] = c
        for i in range(batch):  # counts -> dot products, without the bits past n
            for jj in range(start, stop):
                c = out[i, jj]
                if last_mask != -1:
                    c -= popcount((a[i, words - 1] ^ b[jj, words - 1]) & ~last_mask)
                out[i, jj] = n - 2 * c

    return _feature_drivers(numba, features, parallel, feature_axis=0, multiple=BLOCK)


def _feature_drivers(numba, features, parallel: bool, feature_axis: int, multiple: int):
    """Wrap a compiled ``features(a, w, n, last_mask, out, start, stop)`` (which fills
    ``out[:, start:stop]``, zeroed) into the kernel: one call over every output feature, or,
    with ``parallel``, contiguous chunks of a multiple of ``multiple`` features, one per
    thread. ``feature_axis``: the axis of ``w`` that indexes the output features."""

    @numba.njit(nogil=True, cache=False)
    def serial(a, w, n, last_mask):
        m = w.shape[feature_axis]
        out = np.zeros((a.shape[0], m), dtype=np.int64)
        features(a, w, n, last_mask, out, 0, m)
        return out

    @numba.njit(parallel=True, nogil=True, cache=False)
    def split(a, w, n, last_mask):
        chunks, m = numba.get_num_threads(), w.shape[feature_axis]
        out = np.zeros((a.shape[0], m), dtype=np.int64)
        per = -(-m // (chunks * multiple)) * multiple
        for t in numba.prange(chunks):
            features(a, w, n, last_mask, out, min(t * per, m), min((t + 1) * per, m))
        return out

    return split if parallel else serial


def _compile_word_major_kernel(parallel: bool):
    """Build `xnor_matmul_numba_word_major`'s kernel: the vector runs over output features.

    With the weight stored word-major, ``bt[k, j]`` = word k of weight row j, the words k
    of 8 consecutive features j sit side by side: one activation word x = a[i, k],
    broadcast, is xor-ed with 8 weight rows per ``vpxorq``, popcounted by one ``vpopcntq``
    and added to 8 running counts (``m`` int64 counts, 8 KiB at m = 1024, stay in L1). The
    loop over j is as long as the layer is wide, so LLVM vectorises it fully, and no sum
    across a vector is ever needed.
    """
    numba, popcount = _numba_popcount("xnor_matmul_numba_word_major")

    @numba.njit(nogil=True, fastmath=True, cache=False)
    def features(a, bt, n, last_mask, out, start, stop):  # out[:, start:stop], zeroed
        batch, words = a.shape
        for i in range(batch):
            counts = out[i]
            for k in range(words):
                x = a[i, k]
                for j in range(start, stop):  # xor, popcount, add over features: vectorised
                    counts[j] += popcount(x ^ bt[k, j])
            for j in range(start, stop):  # counts -> dot products, without the bits past n
                c = counts[j]
                if last_mask != -1:
                    c -= popcount((a[i, words - 1] ^ bt[words - 1, j]) & ~last_mask)
                counts[j] = n - 2 * c

    # chunks of a multiple of 8 features per thread: whole vectors
    return _feature_drivers(numba, features, parallel, feature_axis=1, multiple=8)


def xnor_matmul_numba(a_packed: Tensor, b_packed: Tensor, n: int) -> Tensor:
    """`xnor_matmul` compiled by numba to hardware popcount; same arguments, same result.

    One ``popcnt`` per 64-bit word instead of `_popcount64`'s dozen tensor operations; the
    output features are split over ``numba.get_num_threads()`` threads (set it with
    ``numba.set_num_threads``). The first call compiles (about a second). Needs numba
    (``pip install -c constraints.txt numba``).
    """
    global _numba_kernel
    a, b, n = _check_matmul(a_packed, b_packed, n)
    if _numba_kernel is None:
        _numba_kernel = _compile_numba_kernel()
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int64)
    _numba_kernel(
        a.contiguous().numpy(), b.contiguous().numpy(), n, _last_word_mask(n), out.numpy()
    )
    return out


def xnor_matmul_numba_blocked(
    a_packed: Tensor, b_packed: Tensor, n: int, parallel: bool = False
) -> Tensor:
    """`xnor_matmul` by a numba kernel LLVM vectorises; same arguments, same result.

    y_ij = n − 2·Σ_k popcount(a_ik ⊕ b_jk) (§ "The popcount identity"), computed for 4
    output features j at a time, so that each activation word, loaded once, is xor-ed with
    4 weight rows, and the innermost loop (over words k) is only xor, popcount and add:
    with AVX-512 VPOPCNTDQ that is ``vpopcntq`` on 8 words per instruction. One thread by
    default (at batch 1 the whole product takes microseconds, less than waking threads);
    ``parallel=True`` splits the output features over ``numba.get_num_threads()`` threads.
    The first call compiles (seconds). Needs numba; `xnor_matmul_numba` is the simpler
    kernel, `binary_roofline.xnor_roofline` the limit both are measured against.
    """
    a, b, n = _check_matmul(a_packed, b_packed, n)
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be a bool, got {type(parallel).__name__}")
    kernel = _blocked_kernels.get(parallel)
    if kernel is None:
        kernel = _blocked_kernels[parallel] = _compile_blocked_kernel(parallel)
    out = kernel(a.contiguous().numpy(), b.contiguous().numpy(), n, _last_word_mask(n))
    return torch.from_numpy(out)


def xnor_matmul_numba_word_major(
    a_packed: Tensor, bt_packed: Tensor, n: int, parallel: bool = False
) -> Tensor:
    """`xnor_matmul` with the weight's packed words stored word-major: ``bt = b_packedᵀ``.

    ``bt_packed`` is (⌈n/64⌉, N), ``pack_bits(b).T.contiguous()``, laid out once, offline,
    like the packing itself. y_ij = n − 2·Σ_k popcount(a_ik ⊕ bt_kj) (§ "The popcount
    identity"), with the vector running over the output features j: each activation word
    is broadcast and xor-ed with 8 weight rows per instruction, and the counts need no sum
    across a vector (the fastest kernel here at batch 1; see `binary_roofline`). Returns
    (M, N) int64, equal to ``xnor_matmul(a_packed, bt_packed.T, n)``. ``parallel`` as in
    `xnor_matmul_numba_blocked`. Needs numba.
    """
    a, bt = _check_packed(a_packed, "a_packed"), _check_packed(bt_packed, "bt_packed")
    if a.ndim != 2 or bt.ndim != 2:
        raise ValueError(f"a_packed and bt_packed must be 2-d, got shapes {tuple(a.shape)} and "
                         f"{tuple(bt.shape)}")  # fmt: skip
    if a.shape[1] != bt.shape[0]:
        raise ValueError(
            f"a_packed has {a.shape[1]} words per row but bt_packed (words, N) has "
            f"{bt.shape[0]}: store the weight as pack_bits(b).T.contiguous()"
        )
    n = _check_n(n, a.shape[1])
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be a bool, got {type(parallel).__name__}")
    kernel = _word_major_kernels.get(parallel)
    if kernel is None:
        kernel = _word_major_kernels[parallel] = _compile_word_major_kernel(parallel)
    out = kernel(a.contiguous().numpy(), bt.contiguous().numpy(), n, _last_word_mask(n))
    return torch.from_numpy(out)


# ---- neighbours: ternary and power-of-two weights ---------------------------------------------


def ternarize(w: Tensor) -> tuple[Tensor, Tensor]:
    """TWN: (t, α) with t ∈ {−1, 0, +1} (int8) and W ≈ α·t (§ "Neighbours").

    ``t_i = sign(w_i)`` where ``|w_i| > Δ``, else 0, with ``Δ = 0.7 · mean|w|`` (Li & Liu 2016's
    approximation of the optimal threshold for Gaussian-like weights); α = mean of ``|w_i|``
    over the kept entries, which minimises ‖W − αt‖² for that t (0 if none is kept).
    """
    w = check.float_tensor(w, "w", inf=True, why=_SIGN)
    if not torch.isfinite(w).all():
        raise ValueError("w contains inf; the threshold 0.7·mean|w| would be inf")
    delta = 0.7 * w.abs().mean()
    kept = w.abs() > delta
    t = (torch.sign(w) * kept).to(torch.int8)
    alpha = w.abs()[kept].mean() if kept.any() else w.new_zeros(())
    return t, alpha


def power_of_two_quantize(w: Tensor, bits: int, max_exponent: int | None = None) -> Tensor:
    """``w_q = sign(w) · 2^e``, ``e = clamp(round(log2|w|), e_max − 2^(b−1) + 2, e_max)``; 0 ↦ 0.

    A ``bits``-bit code is one sign bit and b − 1 exponent bits; of the 2^(b−1) exponent
    codes one means "zero", leaving 2^(b−1) − 1 consecutive exponents ending at e_max
    (§ "Neighbours"). Rounding ``log2|w|`` is rounding to the nearest power of
    two *in the log domain* (the midpoint between 2^k and 2^(k+1) is 2^(k+½)); exponents
    outside the range are clamped, so tiny weights become ±2^e_min, and only exact zeros
    stay 0. ``max_exponent=None`` takes ``e_max = round(log2 max|w|)``, so the largest weight
    is not clipped. Multiplying by w_q is then a shift. (The seed posts'
    ``sign(w)·2^(sign(w)·floor(log2|w|))`` negates the exponent of negative weights and
    truncates: course erratum 8.)
    """
    w = check.float_tensor(w, "w", inf=True, why=_SIGN)
    if not torch.isfinite(w).all():
        raise ValueError("w contains inf; log2|w| must be finite")
    check.bits(bits, 2, 8, what=" (one sign bit, at least one exponent bit)")
    magnitude = w.abs()
    if max_exponent is None:
        if not (magnitude > 0).any():
            return torch.zeros_like(w)
        max_exponent = int(torch.round(torch.log2(magnitude.max())))
    else:
        check.integer(max_exponent, "max_exponent")
    min_exponent = max_exponent - 2 ** (bits - 1) + 2
    nonzero = magnitude > 0
    e = torch.round(torch.log2(torch.where(nonzero, magnitude, 1.0)))
    e = torch.clamp(e, min_exponent, max_exponent)
    return torch.where(nonzero, torch.sign(w) * torch.exp2(e), 0.0).to(w.dtype)
