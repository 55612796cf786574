"""Saving and loading a checkpoint of a few hundred MB: speed and peak memory per format.

    python benchmarks/checkpoint.py            # ~300 MB of float32, 3 repeats per load
    python benchmarks/checkpoint.py --quick    # ~30 MB, 1 repeat: a smoke test
    python benchmarks/checkpoint.py --cold     # evict the files from the page cache first

The model is made up for the purpose: a state dict of random float32 tensors (``layer{i}.
weight`` of shape (rows, 1024) and a bias each), generated from fixed seeds so that any process
can rebuild any tensor. Formats:

- ``torch.save`` / ``torch.load(weights_only=True)``, and ``torch.load(mmap=True)``;
- safetensors ``save_file`` / ``load_file``, and ``safe_open`` read tensor by tensor (mmap);
- ``minicompress.checkpoint.save_sharded`` / ``iter_sharded`` (tensor by tensor, every shard
  checked against its SHA-256 first);
- ``torch.distributed.checkpoint`` (DCP) with 2 ranks (``torchrun``, gloo, loopback), each
  rank holding half of every tensor as a DTensor; loaded back by 2 ranks, and by 1 process
  (resharding 2 -> 1).

Each load runs in a fresh process (a process's peak resident memory never comes down, so one
measurement would hide the next): the peak is VmHWM minus VmRSS just before loading, after
resetting VmHWM through ``/proc/self/clear_refs`` (``ru_maxrss`` cannot be reset, and it starts
at the parent's peak after fork and exec). A load reads every value (it sums each tensor, and
the sums are checked against the saved state's), so a memory map is paid for too: its pages
count in the resident set as file-backed memory (``anon_held_MB`` is the anonymous memory the
loaded state holds, 0 when the data stay in the page cache). Save times include ``fsync``
(DCP's writer syncs its files itself). Loads read from a warm page cache (the files were just
written) unless ``--cold``. MB = 10^6 bytes. Also reported: the per-rank parameter share
under FSDP2 with 2 processes (`minicompress.fsdp.run`), the machine and the elapsed time.
Temporary files are removed at the end.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

COLUMNS = 1024
FULL = {"layers": 24, "rows": 3072, "shard_bytes": 64_000_000, "repeats": 3}  # 302 MB
QUICK = {"layers": 8, "rows": 960, "shard_bytes": 8_000_000, "repeats": 1}  # 31 MB
TIMEOUT = 600


# ---- the made-up model -------------------------------------------------------------------


def names(layers: int) -> list[str]:
    return [f"layer{i}.{kind}" for i in range(layers) for kind in ("weight", "bias")]


def make_tensor(name: str, rows: int) -> torch.Tensor:
    """The tensor ``name`` of the made-up model, the same in every process."""
    layer, kind = name.split(".")
    seed = 2 * int(layer.removeprefix("layer")) + (kind == "bias")
    g = torch.Generator().manual_seed(seed)
    shape = (rows, COLUMNS) if kind == "weight" else (rows,)
    return torch.randn(shape, generator=g)


def make_state(layers: int, rows: int) -> dict[str, torch.Tensor]:
    return {name: make_tensor(name, rows) for name in names(layers)}


def checksum(tensors) -> float:
    return sum(float(t.sum()) for t in tensors)


# ---- memory of this process (Linux) ------------------------------------------------------


def status(key: str) -> int:
    """A kB field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> dict[str, int]:
    """Reset VmHWM to the current resident set; return the figures to subtract later."""
    Path("/proc/self/clear_refs").write_text("5")
    return {"rss": status("VmRSS"), "anon": status("RssAnon")}


def since(before: dict[str, int]) -> dict[str, float]:
    return {
        "peak_rss_MB": round((status("VmHWM") - before["rss"]) / 1e6, 1),
        "anon_held_MB": round((status("RssAnon") - before["anon"]) / 1e6, 1),
    }


# ---- one load, in a fresh process --------------------------------------------------------


def child(mode: str, path: str, layers: int, rows: int) -> dict:
    """Load ``path`` with ``mode``, reading every value; time and memory of just that."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from minicompress.checkpoint import iter_sharded

    torch.set_num_threads(1)
    if mode.startswith("dcp"):
        import warnings

        import torch.distributed.checkpoint as dcp
    held = None
    before = reset_peak()
    start = time.perf_counter()
    if mode == "torch.load":
        held = torch.load(path, weights_only=True)
        total = checksum(held.values())
    elif mode == "torch.load mmap":
        held = torch.load(path, weights_only=True, mmap=True)
        total = checksum(held.values())
    elif mode == "safetensors load_file":
        held = load_file(path)
        total = checksum(held.values())
    elif mode == "safetensors safe_open":
        with safe_open(path, framework="pt") as f:
            total = checksum(f.get_tensor(k) for k in f.keys())  # noqa: SIM118
    elif mode == "sharded iter_sharded":
        total = checksum(t for _, t in iter_sharded(path))
    elif mode == "dcp 2 -> 1 process":
        held = {n: torch.zeros(t.shape) for n, t in _shapes(layers, rows).items()}
        with warnings.catch_warnings():  # no process group: intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(held, checkpoint_id=path, no_dist=True)
        total = checksum(held.values())
    else:
        raise ValueError(f"unknown load mode {mode!r}")
    seconds = time.perf_counter() - start
    return {"s": seconds, "checksum": total, **since(before)}


def _shapes(layers: int, rows: int) -> dict[str, torch.Tensor]:
    return {
        n: torch.empty((rows, COLUMNS) if n.endswith("weight") else (rows,), device="meta")
        for n in names(layers)
    }


def run_child(mode: str, path: Path, recipe: dict) -> dict:
    command = [sys.executable, __file__, "--child", mode, str(path)]
    command += ["--layers", str(recipe["layers"]), "--rows", str(recipe["rows"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- DCP with 2 ranks (run by torchrun) --------------------------------------------------


def dcp_worker(action: str, directory: str, layers: int, rows: int) -> None:
    """One rank: save (``action="save"``) or load its half of every tensor as a DTensor."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))

    def local(name: str) -> torch.Tensor:
        return make_tensor(name, rows).chunk(world, dim=0)[rank].clone()

    def dtensor(tensor: torch.Tensor, name: str) -> DTensor:
        shape = (rows, COLUMNS) if name.endswith("weight") else (rows,)
        stride = (COLUMNS, 1) if len(shape) == 2 else (1,)
        return DTensor.from_local(tensor, mesh, [Shard(0)], run_check=False, shape=shape,
                                  stride=stride)  # fmt: skip

    report = {"rank": rank, "world": world}
    checkpoint = str(Path(directory) / "dcp")
    if action == "save":
        state = {n: dtensor(local(n), n) for n in names(layers)}
        report["local_bytes"] = sum(t.to_local().nbytes for t in state.values())
        dist.barrier()
        start = time.perf_counter()
        dcp.save(state, checkpoint_id=checkpoint)
        dist.barrier()
        report["s"] = time.perf_counter() - start
    else:
        # warm-up: a tiny save and load, so that DCP's lazy imports and first collectives
        # are not counted in the memory and time of the real load
        tiny = {"x": dtensor(torch.zeros(rows // world), "x")}
        dcp.save(tiny, checkpoint_id=str(Path(directory) / "warmup"))
        dcp.load(tiny, checkpoint_id=str(Path(directory) / "warmup"))
        before = reset_peak()
        dist.barrier()
        start = time.perf_counter()
        shapes = {n: t.chunk(world, dim=0)[rank].shape for n, t in _shapes(layers, rows).items()}
        state = {n: dtensor(torch.zeros(shape), n) for n, shape in shapes.items()}
        dcp.load(state, checkpoint_id=checkpoint)
        report["checksum"] = checksum(t.to_local() for t in state.values())  # reads all
        dist.barrier()
        report["s"] = time.perf_counter() - start
        report |= since(before)
        report["equal"] = all(torch.equal(t.to_local(), local(n)) for n, t in state.items())
    (Path(directory) / f"{action}{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def torchrun(action: str, directory: Path, recipe: dict) -> list[dict]:
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone",
               "--nproc-per-node=2", __file__, "--dcp", action, str(directory),
               "--layers", str(recipe["layers"]), "--rows", str(recipe["rows"])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun {action} failed:\n{done.stderr[-2000:]}")
    return [json.loads((directory / f"{action}{r}.json").read_text()) for r in range(2)]


# ---- the benchmark -----------------------------------------------------------------------


def sync(paths: list[Path], evict: bool = False) -> float:
    """fsync every file (and its folder); with ``evict``, also drop it from the page cache.
    Returns the seconds it took."""
    start = time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if evict and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    for folder in {p.parent for p in paths}:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - start


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (Linux), e.g. ext4 or tmpfs."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            mount, fstype = line.split()[1:3]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def main(recipe: dict, cold: bool = False, where: str | None = None) -> dict:
    from safetensors.torch import save_file

    import minicompress as mc
    from minicompress import checkpoint, fsdp

    started = time.perf_counter()
    torch.set_num_threads(1)
    state = make_state(recipe["layers"], recipe["rows"])
    data_bytes = sum(t.nbytes for t in state.values())
    expected = checksum(state.values())
    mb = data_bytes / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="minicompress-checkpoint-", dir=where))
    saves, loads = {}, {}

    def measure_loads(path: Path, modes: tuple[str, ...]) -> None:
        for mode in modes:
            runs = []
            for _ in range(recipe["repeats"]):
                if cold:
                    sync(files(path), evict=True)
                runs.append(run_child(mode, path, recipe))
            seconds = statistics.median(r["s"] for r in runs)
            loads[mode] = {
                "s": round(seconds, 3),
                "MB_per_s": round(mb / seconds, 1),
                "peak_rss_MB": statistics.median(r["peak_rss_MB"] for r in runs),
                "anon_held_MB": statistics.median(r["anon_held_MB"] for r in runs),
                "checksum_ok": all(r["checksum"] == expected for r in runs),
            }
            print(f"load {mode:24s} {seconds:7.3f} s {mb / seconds:8.1f} MB/s  peak "
                  f"{loads[mode]['peak_rss_MB']:7.1f} MB  anon held "
                  f"{loads[mode]['anon_held_MB']:7.1f} MB", flush=True)  # fmt: skip

    def measure_save(name: str, path: Path, save) -> None:
        start = time.perf_counter()
        save(path)
        seconds = time.perf_counter() - start
        fsync_s = sync(files(path))
        size = sum(p.stat().st_size for p in files(path))
        saves[name] = {
            "s": round(seconds, 3),
            "fsync_s": round(fsync_s, 3),
            "MB_per_s": round(mb / (seconds + fsync_s), 1),
            "file_bytes": size,
        }
        print(f"save {name:24s} {seconds + fsync_s:7.3f} s {saves[name]['MB_per_s']:8.1f} MB/s "
              f"({size:,} bytes)", flush=True)  # fmt: skip

    try:
        path = tmp / "model.pt"
        measure_save("torch.save", path, lambda p: torch.save(state, p))
        measure_loads(path, ("torch.load", "torch.load mmap"))
        path.unlink()

        path = tmp / "model.safetensors"
        measure_save("safetensors save_file", path, lambda p: save_file(state, str(p)))
        measure_loads(path, ("safetensors load_file", "safetensors safe_open"))
        path.unlink()

        folder = tmp / "sharded"
        limit = recipe["shard_bytes"]
        measure_save("sharded save_sharded", folder,
                     lambda p: checkpoint.save_sharded(state, p, limit))  # fmt: skip
        saves["sharded save_sharded"]["shards"] = len(files(folder)) - 1
        saves["sharded save_sharded"]["max_bytes"] = recipe["shard_bytes"]
        measure_loads(folder / checkpoint.INDEX_NAME, ("sharded iter_sharded",))
        shutil.rmtree(folder)
        state.clear()  # the DCP ranks build their own halves

        saved = torchrun("save", tmp, recipe)
        size = sum(p.stat().st_size for p in files(tmp / "dcp"))
        seconds = max(r["s"] for r in saved)
        saves["dcp 2 ranks"] = {
            "s": round(seconds, 3), "fsync_s": None, "MB_per_s": round(mb / seconds, 1),
            "file_bytes": size, "files": len(files(tmp / "dcp")),
            "local_bytes_per_rank": [r["local_bytes"] for r in saved],
        }  # fmt: skip
        print(f"save {'dcp 2 ranks':24s} {seconds:7.3f} s {mb / seconds:8.1f} MB/s", flush=True)
        runs = [torchrun("load", tmp, recipe) for _ in range(recipe["repeats"])]
        seconds = statistics.median(max(r["s"] for r in ranks) for ranks in runs)
        loads["dcp 2 ranks"] = {
            "s": round(seconds, 3),
            "MB_per_s": round(mb / seconds, 1),
            "peak_rss_MB_per_rank": [
                statistics.median(ranks[k]["peak_rss_MB"] for ranks in runs) for k in range(2)
            ],
            "anon_held_MB_per_rank": [
                statistics.median(ranks[k]["anon_held_MB"] for ranks in runs) for k in range(2)
            ],
            "equal": all(r["equal"] for ranks in runs for r in ranks),
        }
        print(f"load {'dcp 2 ranks':24s} {seconds:7.3f} s {mb / seconds:8.1f} MB/s  peak per "
              f"rank {loads['dcp 2 ranks']['peak_rss_MB_per_rank']} MB", flush=True)  # fmt: skip
        measure_loads(tmp / "dcp", ("dcp 2 -> 1 process",))
        shutil.rmtree(tmp / "dcp")

        start = time.perf_counter()
        reports = fsdp.run(tmp / "fsdp", processes=2)
        fsdp_s = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = reports[0]["total_parameters"]
    return {
        "model": {
            "tensors": len(names(recipe["layers"])),
            "data_bytes": data_bytes,
            "MB": round(mb, 1),
            "dtype": "float32",
        },
        "save": saves,
        "load": loads,
        "fsdp2_two_processes": {
            "model": "LeNet-300-100",
            "total_parameters": total,
            "local_parameters": [r["local_parameters"] for r in reports],
            "share": [round(r["local_parameters"] / total, 4) for r in reports],
            "max_abs_difference": max(r["max_abs_difference"] for r in reports),
            "wall_s": round(fsdp_s, 1),
        },
        "repeats": recipe["repeats"],
        "page_cache": "cold (evicted before each load)" if cold else "warm",
        "filesystem": filesystem(tmp.parent),
        "machine": mc.measure.machine(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~30 MB, one repeat")
    parser.add_argument("--cold", action="store_true", help="evict files before each load")
    parser.add_argument("--dir", default=None, help="folder for the temporary files")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--dcp", nargs=2, metavar=("ACTION", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.layers, args.rows)))
    elif args.dcp:
        dcp_worker(*args.dcp, args.layers, args.rows)
    else:
        print(json.dumps(main(QUICK if args.quick else FULL, cold=args.cold, where=args.dir)))
