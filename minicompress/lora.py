"""LoRA and QLoRA: fine-tune a frozen (possibly compressed) model through a low-rank update.

LoRA (Hu et al. 2022) leaves a Linear layer's weight W (m × n, out × in) frozen and learns
ΔW = B A with A (r × n) and B (m × r): r(m + n) trainable numbers instead of mn
(`lora_parameters`). The layer computes y = W x + (α/r)·B A x (`LoRALinear`); B starts at
zero, so training starts exactly from the base model, and A starts small and random (a zero
A would leave B without a gradient). After training the update merges into the weight,
W' = W + (α/r)·B A (`merge_lora`), and the adapted model costs nothing extra at inference.

QLoRA (Dettmers et al. 2023) keeps the frozen base quantized while it trains the adapters:
`quantize_base` stores each block weight as packed group-quantized codes
(`minicompress.groupwise.pack_groups`, int4 with groups of 32 by default) that are
dequantized in every forward pass and never trained. What fine-tuning then holds in memory
is derived and measured by `finetune_memory`: the frozen base at its storage width, plus
4 bytes for each trainable parameter, 4 for its gradient and 8 for AdamW's two moments.

Chapter "Pruning, adapting and distilling a small language model", sections LoRA and QLoRA.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.groupwise import dequantize_groups, pack_groups, quantize_groups, unpack_groups
from minicompress.lm import _check_tokens, _context

__all__ = [
    "FinetuneMemory",
    "LoRALinear",
    "QuantizedLinear",
    "add_lora",
    "adapter_parameters",
    "finetune_memory",
    "lora_parameters",
    "memory_after_one_step",
    "merge_lora",
    "predicted_finetune_memory",
    "quantize_base",
]


def lora_parameters(m: int, n: int, r: int) -> int:
    """Trainable parameters of a rank-r adapter on an m × n (out × in) weight: r(m + n),
    against mn for the weight itself; the adapter is smaller when r < mn/(m + n)
    (the payoff rank of chapter "Architecture and low rank").
    Chapter "Pruning, adapting and distilling a small language model", section LoRA.
    """
    check.integer(m, "m", 1)
    check.integer(n, "n", 1)
    check.integer(r, "r", 1, min(m, n))  # as LoRALinear: a rank above min(m, n) adds nothing
    return r * (m + n)


class QuantizedLinear(nn.Module):
    """A frozen Linear layer whose weight is stored group-quantized and packed.

    Buffers hold what `minicompress.groupwise.pack_groups` writes (b-bit codes packed into
    bytes, float16 scales, b-bit zero points) and the float bias; ``weight`` is
    Ŵ = S (q − Z) (S as the float16 the file holds), rebuilt in every forward pass and
    never stored, so the layer occupies
    ⌈nb/8⌉ + 2n/g + ⌈nb/(8g)⌉ bytes for n weights (plus its bias), b + (16 + b)/g bits per
    weight (`minicompress.groupwise.bits_per_weight`). Nothing in it is trainable.
    Chapter "Pruning, adapting and distilling a small language model", section QLoRA.
    """

    def __init__(self, linear: nn.Linear, bits: int = 4, group_size: int = 32):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        check.bits(bits, 2, 8, what=" (codes are packed into bytes)")
        packed = pack_groups(quantize_groups(linear.weight.detach(), bits, group_size))
        for key, tensor in packed.items():
            self.register_buffer(key, tensor)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.group_size = bits, group_size

    @property
    def weight(self) -> Tensor:
        """Ŵ = S (q − Z) as float32 (out, in), dequantized from the packed buffers."""
        keys = ("codes", "scale", "zero", "header")
        return dequantize_groups(unpack_groups({k: getattr(self, k) for k in keys}))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}")  # fmt: skip


class LoRALinear(nn.Module):
    """y = base(x) + (α/r)·x Aᵀ Bᵀ: a frozen ``base`` layer plus a trainable rank-r update.

    ``base`` is an ``nn.Linear`` or a `QuantizedLinear` of weight W (out × in); it is frozen
    (``requires_grad`` False) and used as it is. A (r × in) starts uniform in ±1/√in, drawn
    from ``torch.Generator(seed)`` (the initialisation PyTorch gives a Linear's weight);
    B (out × r) starts at zero, so a fresh adapter computes exactly what ``base`` does.
    ``alpha`` defaults to r (scale α/r = 1). Only A and B are trained: r(in + out)
    parameters (`lora_parameters`).
    Chapter "Pruning, adapting and distilling a small language model", section LoRA.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None, seed: int = 0):
        super().__init__()
        if not isinstance(base, nn.Linear | QuantizedLinear):
            raise TypeError(f"base must be a torch.nn.Linear or a QuantizedLinear, got "
                            f"{type(base).__name__}")  # fmt: skip
        n_in, n_out = base.in_features, base.out_features
        self.rank = check.integer(rank, "rank", 1, min(n_in, n_out))
        self.alpha = float(rank) if alpha is None else check.number(alpha, "alpha", 0.0)
        generator = torch.Generator().manual_seed(check.integer(seed, "seed", 0))
        bound = 1 / math.sqrt(n_in)
        a = (2 * torch.rand(rank, n_in, generator=generator) - 1) * bound
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(a.to(base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(n_out, rank, dtype=base.weight.dtype))

    @property
    def scale(self) -> float:
        """α/r, the factor of the update."""
        return self.alpha / self.rank

    def delta_weight(self) -> Tensor:
        """ΔW = (α/r)·B A, shape (out, in)."""
        return self.scale * self.lora_b @ self.lora_a

    def forward(self, x: Tensor) -> Tensor:
        # x Aᵀ Bᵀ costs r(in + out) per token; forming BA first would cost in·out
        return self.base(x) + self.scale * (x @ self.lora_a.T) @ self.lora_b.T


def _adaptable(model: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Linear or QuantizedLinear inside ``model.blocks``, by qualified name."""
    if not isinstance(getattr(model, "blocks", None), nn.Module):
        raise TypeError("model must have a `blocks` submodule holding its Linear layers "
                        "(e.g. a TinyGPT), or pass names=")  # fmt: skip
    kinds = nn.Linear | QuantizedLinear
    return {f"blocks.{n}": m for n, m in model.blocks.named_modules() if isinstance(m, kinds)}


def _layers(model: nn.Module, names: Iterable[str] | None, kinds: type | tuple) -> list[str]:
    if isinstance(names, str):
        raise TypeError("names must be an iterable of module names, not one str")
    modules = dict(model.named_modules())
    names = list(_adaptable(model)) if names is None else list(names)
    wrong = [n for n in names if not isinstance(modules.get(n), kinds)]
    if wrong:
        raise ValueError(f"names {wrong} are not layers that can be replaced here")
    if not names:
        raise ValueError("no layer to replace")
    return names


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def add_lora(
    model: nn.Module, rank: int, alpha: float | None = None,
    names: Iterable[str] | None = None, seed: int = 0,
) -> nn.Module:  # fmt: skip
    """A deep copy of ``model`` in which every named layer is a `LoRALinear` of rank r and
    every other parameter is frozen; ``model`` itself is not touched.

    ``names``: qualified names of nn.Linear or `QuantizedLinear` layers (default: all of
    them inside ``model.blocks``; add ``"head"`` to adapt the output layer). Layer i's A is
    drawn with seed ``seed + i``. Trainable parameters: Σ r(mᵢ + nᵢ) (`adapter_parameters`).
    Chapter "Pruning, adapting and distilling a small language model", section LoRA.
    """
    check.module(model)
    check.integer(seed, "seed", 0)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA adapters: merge them first (merge_lora), "
                         "or train the ones it has")  # fmt: skip
    names = _layers(model, names, (nn.Linear, QuantizedLinear))
    adapted = copy.deepcopy(model).requires_grad_(False)
    for i, name in enumerate(names):
        layer = adapted.get_submodule(name)
        _replace(adapted, name, LoRALinear(layer, rank, alpha, seed + i))
    return adapted


def adapter_parameters(model: nn.Module) -> int:
    """The parameters of every `LoRALinear` adapter in ``model``: Σ r(mᵢ + nᵢ). A compressed
    model keeps its adapters beside the compressed weights, and these count in its size.
    Chapter "Pruning, adapting and distilling a small language model", section LoRA.
    """
    check.module(model)
    adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
    return sum(m.lora_a.numel() + m.lora_b.numel() for m in adapters)


def merge_lora(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every `LoRALinear` replaced by a plain nn.Linear of
    weight W + (α/r)·B A (and the base's bias) in the adapter's dtype; all its parameters
    trainable again. The caller's random generator is not touched.

    The merged model computes the adapted one's function up to float rounding, at no extra
    cost. Merging into a 2:4-sparse or quantized W makes it dense and float (BA is neither),
    so a compressed model keeps the adapter beside it, and its bits count in the ledger
    (`adapter_parameters`).
    Chapter "Pruning, adapting and distilling a small language model", section LoRA.
    """
    check.module(model)
    merged = copy.deepcopy(model)
    names = [n for n, m in merged.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("model has no LoRALinear layer to merge (see add_lora)")
    with torch.no_grad():
        for name in names:
            adapter = merged.get_submodule(name)
            base = adapter.base
            dtype = adapter.lora_a.dtype  # the adapter's (= the model's float) dtype
            # skip_init: no random initial weights (they are overwritten; the caller's
            # global generator stays where it was)
            plain = nn.utils.skip_init(nn.Linear, base.in_features, base.out_features,
                                       bias=base.bias is not None, dtype=dtype)  # fmt: skip
            plain.weight.copy_(base.weight.to(dtype) + adapter.delta_weight())
            if base.bias is not None:
                plain.bias.copy_(base.bias)
            _replace(merged, name, plain)
    return merged.requires_grad_(True)


def quantize_base(
    model: nn.Module, bits: int = 4, group_size: int = 32, names: Iterable[str] | None = None
) -> nn.Module:
    """A deep copy of ``model`` whose named nn.Linear layers (default: every one inside
    ``model.blocks``) are `QuantizedLinear`: weights stored as packed b-bit codes with one
    scale and zero point per ``group_size`` inputs, b + (16 + b)/g bits per weight, frozen.
    `add_lora` on the result gives QLoRA. The embeddings, LayerNorms and ``head`` stay float.
    Chapter "Pruning, adapting and distilling a small language model", section QLoRA.
    """
    check.module(model)
    names = _layers(model, names, nn.Linear)
    quantized = copy.deepcopy(model)
    for name in names:
        _replace(quantized, name, QuantizedLinear(quantized.get_submodule(name), bits, group_size))
    return quantized


@dataclass(frozen=True)
class FinetuneMemory:
    """Bytes held while fine-tuning: the frozen model (parameters and buffers that are not
    trained, at their storage width), the trainable parameters, their gradients, and the
    optimizer's state."""

    frozen: int
    trainable: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        """frozen + trainable + gradients + optimizer."""
        return self.frozen + self.trainable + self.gradients + self.optimizer


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """(frozen tensors, trainable parameters) of ``model``, each storage counted once."""
    seen, frozen, trainable = set(), [], []
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        (trainable if isinstance(t, nn.Parameter) and t.requires_grad else frozen).append(t)
    return frozen, trainable


def _frozen_bytes(module: nn.Module) -> int:
    """Predicted bytes of the frozen part of one module (not of its children)."""
    total = 0
    if isinstance(module, QuantizedLinear):
        n, b, g = module.in_features * module.out_features, module.bits, module.group_size
        total += math.ceil(n * b / 8) + 2 * (n // g) + math.ceil((n // g) * b / 8)
        total += _nbytes(module.header)  # 5 int64: out, in, bits, g, symmetric
        return total + (0 if module.bias is None else 4 * module.out_features)
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return sum(_nbytes(t) for t in tensors if not (isinstance(t, nn.Parameter) and t.requires_grad))


def predicted_finetune_memory(model: nn.Module, moments: int = 2) -> FinetuneMemory:
    """The bytes fine-tuning ``model`` with AdamW holds, derived from its layers:

    frozen = Σ float tensors 4·numel (+ 1 byte per bool mask entry) + Σ quantized layers
    (⌈nb/8⌉ codes + 2n/g float16 scales + ⌈nb/(8g)⌉ zero points + 40 header bytes
    + 4·out bias); with P trainable parameters in k tensors, trainable = 4P, gradients = 4P,
    optimizer = 4·moments·P + 4k (AdamW: two moments and one float32 step counter per
    tensor). So full fine-tuning costs about 16 bytes per parameter and QLoRA about
    (b + (16 + b)/g)/8 per frozen weight + 16 per adapter parameter.
    Chapter "Pruning, adapting and distilling a small language model", section QLoRA.
    """
    check.module(model)
    check.integer(moments, "moments", 0)
    frozen = sum(_frozen_bytes(module) for module in model.modules())
    _, trainable = _tensors(model)
    p = sum(t.numel() for t in trainable)
    return FinetuneMemory(frozen, 4 * p, 4 * p, 4 * moments * p + 4 * len(trainable))


def finetune_memory(model: nn.Module, optimizer: torch.optim.Optimizer) -> FinetuneMemory:
    """The bytes held during fine-tuning, measured: the sum of numel × element size over
    the model's frozen parameters and buffers, its trainable parameters, their ``.grad``
    tensors and every tensor in ``optimizer.state`` (call it after an optimizer step, when
    the state exists). Agrees with `predicted_finetune_memory` for AdamW on float32.
    Chapter "Pruning, adapting and distilling a small language model", section QLoRA.
    """
    check.module(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")  # fmt: skip
    frozen, trainable = _tensors(model)
    grads = [p.grad for p in trainable if p.grad is not None]
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)]
    parts = (frozen, trainable, grads, state)
    return FinetuneMemory(*(sum(_nbytes(t) for t in ts) for ts in parts))


def memory_after_one_step(
    model: nn.Module, tokens: Tensor, batch_size: int = 16
) -> tuple[FinetuneMemory, FinetuneMemory]:
    """(predicted, measured) bytes held after one AdamW step on a copy of ``model``.

    The step trains what ``model`` leaves trainable (all of it, or only its adapters) on
    ``batch_size`` consecutive windows of ``model.context + 1`` tokens from the start of
    ``tokens`` (next-character cross-entropy), so that gradients and optimizer state exist;
    then `predicted_finetune_memory` and `finetune_memory` are taken. ``model`` itself is
    not changed. Chapter "Pruning, adapting and distilling a small language model",
    § "QLoRA".
    """
    context = _context(model)
    check.integer(batch_size, "batch_size", 1)
    need = batch_size * (context + 1)
    if len(_check_tokens(tokens, context)) < need:
        raise ValueError(f"tokens has {len(tokens)} tokens; one step needs batch_size × "
                         f"(context + 1) = {need}")  # fmt: skip
    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    window = tokens[:need].view(batch_size, context + 1)
    logits = model(window[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten()).backward()
    optimizer.step()
    return predicted_finetune_memory(model), finetune_memory(model, optimizer)
