"""The course's models: the two networks of Han et al. (2015), a configurable MLP, a tiny GPT.

- `LeNet300100`: the 784-300-100-10 multilayer perceptron (266 610 parameters).
- `LeNet5`: Caffe's LeNet as used by Han et al. 2015 and Deep Compression: conv 20 (5x5),
  max-pool, conv 50 (5x5), max-pool, fc 500, fc 10 (431 080 parameters).
- `TinyGPT`: a nanoGPT-style character-level transformer (chapters 9 and 10).

Layers are named attributes (``fc1``, ``conv2``, ...) rather than indices in a
``Sequential``, so tables of per-layer results read like the papers' tables. Widths are
arguments, so a structurally pruned network is the same class with smaller widths.

References: Han, Pool, Tran, Dally (2015), *Learning both Weights and Connections for
Efficient Neural Networks*; LeCun et al. (1998) for LeNet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = ["MLP", "LeNet300100", "LeNet5", "TinyGPT"]


def _check_widths(widths: Sequence[int], what: str) -> tuple[int, ...]:
    widths = tuple(widths)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:  # one message for all
            raise ValueError(f"{what} must be positive integers, got {widths!r}")
    return widths


class MLP(nn.Module):
    """A ReLU multilayer perceptron on flattened 28x28 images: 784 -> hidden... -> 10.

    Layers are ``fc1 ... fcK``. ``MLP((1200, 1200))`` is Hinton et al.'s distillation
    teacher; ``MLP((300, 100))`` has the shape of `LeNet300100`.
    """

    def __init__(
        self, hidden: Sequence[int] = (300, 100), in_features: int = 784, classes: int = 10
    ):
        super().__init__()
        sizes = (in_features, *_check_widths(hidden, "hidden widths"), classes)
        _check_widths(sizes, "in_features and classes")
        self.hidden = sizes[1:-1]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))
        self.n_layers = len(sizes) - 1

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (N, 1, 28, 28) -> (N, 784)
        for i in range(1, self.n_layers + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.n_layers:
                x = F.relu(x)
        return x


class LeNet300100(MLP):
    """LeNet-300-100: 784-300-100-10 with ReLU, exactly the network of Han et al. 2015.

    Parameters: 784·300 + 300 + 300·100 + 100 + 100·10 + 10 = 266 610.
    """

    def __init__(self, hidden: Sequence[int] = (300, 100)):
        super().__init__(hidden)


class LeNet5(nn.Module):
    """Caffe's LeNet (Han et al. 2015's "LeNet-5"): conv1 20@5x5, conv2 50@5x5, fc1 500, fc2 10.

    Shapes: (N,1,28,28) -conv1-> (N,20,24,24) -pool-> (N,20,12,12) -conv2-> (N,50,8,8)
    -pool-> (N,50,4,4) -flatten-> (N,800) -fc1-> (N,500) -fc2-> (N,10).
    Parameters: 520 + 25 050 + 400 500 + 5 010 = 431 080.

    Caffe's prototxt has no nonlinearity after the convolutions; we put a ReLU after each
    (as every PyTorch LeNet does). It adds no parameters and keeps activations non-negative,
    which the quantization chapter relies on.
    """

    def __init__(self, conv1: int = 20, conv2: int = 50, fc1: int = 500):
        super().__init__()
        _check_widths((conv1, conv2, fc1), "layer widths")
        self.conv1 = nn.Conv2d(1, conv1, kernel_size=5)
        self.conv2 = self.make_conv2(conv1, conv2)
        self.fc1 = nn.Linear(conv2 * 4 * 4, fc1)
        self.fc2 = nn.Linear(fc1, 10)

    def make_conv2(self, in_channels: int, out_channels: int) -> nn.Module:
        """The second convolution (5×5, 12×12 -> 8×8). A variant overrides this one method
        (e.g. `minicompress.architecture.SeparableLeNet5`); the layers are still created in
        the order conv1, conv2, fc1, fc2, so a variant draws its other layers' initial
        weights exactly as LeNet5 does."""
        return nn.Conv2d(in_channels, out_channels, kernel_size=5)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 20, 12, 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 50, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 500)
        return self.fc2(x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t only sees positions ≤ t.

    ``qkv`` maps d → 3d (queries, keys, values), ``proj`` maps d → d. Attention is written
    out (softmax(QKᵀ/√(d/h) + mask) V) rather than calling a fused kernel, so every step is
    visible. ``kv_quantizer``, if set, is applied to the keys and values before they are
    used: that is what a quantized KV cache does to decoding (chapter "Quantizing a small
    language model", § "The KV cache").
    """

    def __init__(self, d: int, heads: int, context: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.kv_quantizer = None  # a function of a (B, h, T, d/h) tensor, or None
        mask = torch.ones(context, context, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if self.kv_quantizer is not None:
            k, v = self.kv_quantizer(k), self.kv_quantizer(v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)  # (B, h, T, T)
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        y = scores.softmax(dim=-1) @ v  # (B, h, T, d/h)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLPBlock(nn.Module):
    """The transformer's feed-forward part: d → 4d, GELU, 4d → d (``fc``, ``proj``)."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, d: int, heads: int, context: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, context)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLPBlock(d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A character-level GPT in the style of Karpathy's nanoGPT (Radford et al. 2019's layout).

    Token and position embeddings (``tok_emb``, ``pos_emb``), ``layers`` pre-norm blocks
    (``blocks[i].attn.qkv``, ``.attn.proj``, ``.mlp.fc``, ``.mlp.proj``), a final LayerNorm
    ``ln_f`` and an untied output layer ``head`` (d → vocab, no bias). Each block holds
    12d² + 13d parameters: qkv 3d² + 3d, proj d² + d, fc 4d² + 4d, proj 4d² + d, two
    LayerNorms 4d. Input (B, T) token ids with T ≤ ``context``; output (B, T, vocab) logits
    for the next character at every position.
    """

    def __init__(
        self, vocab: int = 96, context: int = 128, d: int = 64, layers: int = 4, heads: int = 4
    ):
        super().__init__()
        vocab, context, d, layers, heads = _check_widths(
            (vocab, context, d, layers, heads), "vocab, context, d, layers and heads"
        )
        self.context = context
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, context) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.apply(self._init)

    @classmethod
    def seeded(cls, seed: int, **shape: int) -> TinyGPT:
        """A fresh TinyGPT whose initial weights are drawn with ``torch.manual_seed(seed)``,
        leaving the global random state as it was (``torch.random.fork_rng``).

        Two calls with the same seed and shape give the same weights: the text-only and the
        distilled student of chapter "Pruning, adapting and distilling a small language
        model", § "Distilling the language model", start from the same point. ``shape`` are
        the constructor's arguments (vocab, context, d, layers, heads).
        """
        check.integer(seed, "seed", 0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(**shape)

    @staticmethod
    def _init(module: nn.Module) -> None:
        # GPT-2's initialisation: N(0, 0.02) weights, zero biases
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context of {self.context}")
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
