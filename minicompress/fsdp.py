"""One model across several processes: PyTorch's FSDP2 and distributed checkpoint, on CPU.

Chapter "Storage, deployment and sharding", § "Sharding across devices". Each process
("rank") of a gloo group keeps 1/N of every parameter (`fully_shard`); before a layer runs,
the ranks all-gather its full weight, and free it after. `torch.distributed.checkpoint`
(DCP) then saves one file per rank, and a different number of processes (here: one) can load
it — resharding. Run it with

    torchrun --nproc-per-node 2 -m minicompress.fsdp DIRECTORY

or `run(DIRECTORY)`, which launches that on the loopback interface and returns the ranks'
reports. Everything is CPU and gloo: no GPU, no NCCL.

References: Zhao et al. (2023), *PyTorch FSDP*; Rajbhandari et al. (2020), *ZeRO*.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from minicompress import _validate as check
from minicompress.models import LeNet300100

SEED = 0


def memory_per_device(
    parameters: float, devices: int, *, bytes_per_value: float = 4, optimizer_states: int = 2
) -> float:
    """Bytes of *model states* each device holds for training, fully sharded:

        M = (2 + o) · Ψ · B / D

    for Ψ parameters, each with its gradient and o optimizer states (Adam: 2, SGD with
    momentum: 1), all of B bytes, on D devices (ZeRO stage 3 / FSDP). D = 1 is one whole
    copy: copying a model to D devices costs D·M in all, sharding keeps the total at M. Not
    counted: activations, communication buffers, and the one layer FSDP gathers whole while
    it runs. § "Sharding across devices".
    """
    parameters = check.number(parameters, "parameters", 0.0)
    devices = check.integer(devices, "devices", low=1)
    bytes_per_value = check.number(bytes_per_value, "bytes_per_value", 0.0, low_open=True)
    optimizer_states = check.integer(optimizer_states, "optimizer_states", low=0)
    return (2 + optimizer_states) * parameters * bytes_per_value / devices


def local_parameters(model: nn.Module) -> int:
    """Parameters this process holds: for FSDP2's DTensors, the local shard only."""
    check.module(model)
    return sum(getattr(p, "_local_tensor", p).numel() for p in model.parameters())


def _reference_batch() -> torch.Tensor:
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(SEED + 1))


def _local(t: torch.Tensor) -> torch.Tensor:
    return getattr(t, "_local_tensor", t)


def _training_step_bytes(model: nn.Module) -> int:
    """One Adam step, then the bytes this rank holds: parameters + gradients + Adam's two
    moments, each counted by its local shard."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(_reference_batch()).square().mean().backward()
    optimizer.step()
    held = 0
    for p in model.parameters():
        tensors = [p, p.grad] + [optimizer.state[p][k] for k in ("exp_avg", "exp_avg_sq")]
        held += sum(_local(t).numel() * _local(t).element_size() for t in tensors)
    return held


def _worker(directory: Path) -> None:
    """One rank: shard LeNet-300-100, compare its output with the unsharded model, save."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(SEED)
    model = LeNet300100()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(_reference_batch())
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    with torch.no_grad():
        output = model(_reference_batch())
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(directory / "dcp"))
    report = {
        "rank": rank,
        "world": world,
        "local_parameters": local_parameters(model),
        "total_parameters": sum(t.numel() for t in reference.values()),
        "max_abs_difference": float((output - expected).abs().max()),
        "local_training_bytes": _training_step_bytes(model),
    }
    (directory / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def run(directory: str | Path, processes: int = 2, timeout: float = 180.0) -> list[dict]:
    """Launch the FSDP2 + DCP example with ``torchrun`` on ``processes`` CPU ranks (loopback
    only, gloo) and return each rank's report. § "Sharding across devices"."""
    processes = check.integer(processes, "processes", low=1, high=8)
    timeout = check.number(timeout, "timeout", 0.0, low_open=True)
    directory = check.output_folder(directory)
    # torchrun as a module of this Python: no need to find a `torchrun` script on PATH
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "minicompress.fsdp", str(directory)]
    loopback = "lo0" if sys.platform == "darwin" else "lo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads((directory / f"rank{r}.json").read_text()) for r in range(processes)]


def load_unsharded(directory: str | Path) -> dict[str, torch.Tensor]:
    """Load the DCP checkpoint that `run` wrote into one plain process: a full state dict of
    LeNet-300-100 (resharding N ranks → 1). § "Sharding across devices".

    Trusted folders only: DCP's ``.metadata`` file is a pickle, and loading it runs whatever
    it names, like ``torch.load(..., weights_only=False)``."""
    import torch.distributed.checkpoint as dcp

    path = Path(directory) / "dcp"
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"no distributed checkpoint in {path} (run `run` first)")
    state = {"model": LeNet300100().state_dict()}
    with warnings.catch_warnings():  # DCP warns that there is no process group: intended
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
    return state["model"]


def reference_state() -> dict[str, torch.Tensor]:
    """The unsharded model's initial state dict, as every rank built it (seed ``SEED``)."""
    torch.manual_seed(SEED)
    return LeNet300100().state_dict()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
