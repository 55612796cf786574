"""Calibration data for post-training LLM quantization: the inputs X of every block Linear.

GPTQ, AWQ and SmoothQuant all look at what a layer actually receives on a little text
(chapter "Quantizing a small language model", § "GPTQ"). `layer_inputs` runs the model on
calibration tokens with forward hooks on the Linear layers of ``model.blocks`` and returns
each layer's inputs as an (N, in) matrix, one row per token position; `hessian` turns them
into H = 2XᵀX/N, the Hessian of the layer-wise objective ‖XWᵀ − XŴᵀ‖²/N.

Convention: the papers write X as (in, N), columns being tokens, and H = 2XXᵀ. We keep
PyTorch's layout (rows are tokens), so the same matrix is 2XᵀX, and we divide by N so that
H is an average that does not grow with the amount of calibration text (GPTQ's solution
does not change: its damping is relative to mean(diag H)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = ["block_linears", "hessian", "layer_inputs", "token_windows"]


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside ``model.blocks``, by its name in ``model.named_modules()``.

    For a `TinyGPT` these are ``blocks.i.attn.qkv``, ``blocks.i.attn.proj``,
    ``blocks.i.mlp.fc`` and ``blocks.i.mlp.proj`` in forward order; the embeddings,
    LayerNorms and ``head`` are not included (chapter "Quantizing a small language model",
    § "GPTQ").
    """
    check.module(model)
    if not isinstance(getattr(model, "blocks", None), nn.Module):
        raise TypeError("model must have a `blocks` submodule holding its Linear layers "
                        "(e.g. a TinyGPT)")  # fmt: skip
    return {
        f"blocks.{name}": m for name, m in model.blocks.named_modules() if isinstance(m, nn.Linear)
    }


def token_windows(tokens: Tensor, context: int) -> Tensor:
    """The non-overlapping windows of ``context`` tokens, (len(tokens) // context, context).

    The last partial window is dropped (chapter "Quantizing a small language model",
    § "GPTQ")."""
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 1:
        raise TypeError(f"tokens must be a 1-D int64 tensor of token ids, got "
                        f"{check.describe(tokens)}")  # fmt: skip
    check.integer(context, "context", 1)
    n = len(tokens) // context
    if n == 0:
        raise ValueError(f"tokens has {len(tokens)} tokens; need at least context = {context}")
    return tokens[: n * context].view(n, context)


@torch.no_grad()
def layer_inputs(
    model: nn.Module,
    tokens: Tensor,
    names: Sequence[str] | None = None,
    max_rows: int | None = None,
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """The inputs X (N, in) of the block Linears ``names`` (default: all) on ``tokens``.

    The model runs (in eval mode, without gradients) on the non-overlapping windows of
    ``model.context`` tokens; a forward hook on each named Linear records its input, one
    row per token position. ``max_rows`` keeps that many evenly spaced rows. The hooks are
    removed and the model's train/eval mode restored afterwards, also if the forward pass
    fails (chapter "Quantizing a small language model", § "GPTQ").
    """
    linears = block_linears(model)
    context = getattr(model, "context", None)
    if not isinstance(context, int):
        raise TypeError("model must have an int attribute `context` (e.g. a TinyGPT)")
    windows = token_windows(tokens, context)
    if names is None:
        names = list(linears)
    else:
        if isinstance(names, str):
            raise TypeError("names must be a sequence of layer names, not a str")
        unknown = [n for n in names if n not in linears]
        if unknown:
            raise ValueError(f"names {unknown} are not block Linears; known: {list(linears)}")
    if max_rows is not None:
        check.integer(max_rows, "max_rows", 1)
    check.integer(batch_size, "batch_size", 1)
    chunks: dict[str, list[Tensor]] = {n: [] for n in names}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            chunks[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())

        return hook

    handles = [linears[n].register_forward_hook(recorder(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        for i in range(0, len(windows), batch_size):
            model(windows[i : i + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = {}
    for name in names:
        x = torch.cat(chunks[name])
        if max_rows is not None and max_rows < len(x):
            x = x[torch.linspace(0, len(x) - 1, max_rows).round().long()]
        out[name] = x
    return out


def hessian(x: Tensor) -> Tensor:
    """H = 2XᵀX/N for inputs X of shape (N, in): the Hessian of ‖XWᵀ − XŴᵀ‖²/N in each row
    of Ŵ (chapter "Quantizing a small language model", § "GPTQ").

    Computed in float64 (in × in)."""
    x = check.float_tensor(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be a 2-D (N, in) matrix of inputs, got shape {tuple(x.shape)}")
    x = x.double()
    return 2.0 * x.T @ x / len(x)
