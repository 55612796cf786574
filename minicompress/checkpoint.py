"""A checkpoint split into shards, the layout large models ship in.

Chapter "Storage, deployment and sharding", § "Sharding a checkpoint". A state dict is cut, in
key order, into safetensors files of at most ``max_bytes`` of tensor data each
(``model-00001-of-00003.safetensors``, ...) and an index, ``model.safetensors.index.json``::

    {"metadata": {"total_size": <bytes of tensor data>,
                  "sha256": {"model-00001-of-00003.safetensors": "<hex>", ...}},
     "weight_map": {"fc1.weight": "model-00001-of-00003.safetensors", ...}}

``metadata.total_size`` and ``weight_map`` are exactly the Hugging Face layout, so their
loaders read these checkpoints. ``metadata.sha256`` is ours: the index pins every shard, so a
missing, swapped or altered shard is refused before any tensor is used. Loading is lazy
(`iter_sharded` reads one tensor at a time through safetensors' memory map), and nothing is
unpickled: safetensors files hold a JSON header and raw little-endian numbers.

References: the safetensors format (Hugging Face); the sharded-checkpoint index of
``transformers``' ``save_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from minicompress import _validate as check

INDEX_NAME = "model.safetensors.index.json"
SHARD_NAME = re.compile(r"[\w.-]+-\d{5}-of-\d{5}\.safetensors")  # use with fullmatch
PREFIX = re.compile(r"[\w.-]+")
MAX_SHARDS = 99_999  # five digits in the file names
MAX_INDEX_BYTES = 64 * 2**20  # an index is a few kB per thousand tensors; refuse a huge one


def tensor_bytes(tensor: Tensor) -> int:
    """Bytes of a tensor's data: numel × element size (what a shard stores for it)."""
    return tensor.numel() * tensor.element_size()


def plan_shards(state: Mapping[str, Tensor], max_bytes: int) -> list[list[str]]:
    """Cut the keys of ``state``, in order, into shards of at most ``max_bytes`` of data.

    Greedy: a tensor joins the current shard if the shard stays within ``max_bytes``,
    otherwise it starts the next one. A tensor larger than ``max_bytes`` gets a shard of its
    own (tensors are never split), so every shard but such a one holds ≤ ``max_bytes``.
    § "Sharding a checkpoint".
    """
    max_bytes = check.integer(max_bytes, "max_bytes", low=1)
    _check_state(state)
    shards: list[list[str]] = []
    used = max_bytes + 1  # forces a new shard for the first tensor
    for name, tensor in state.items():
        size = tensor_bytes(tensor)
        if used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def shard_file_name(k: int, n: int, prefix: str = "model") -> str:
    """``prefix-0000k-of-0000n.safetensors`` (1-based), the name the index points to."""
    n = check.integer(n, "n", low=1, high=MAX_SHARDS)
    k = check.integer(k, "k", low=1, high=n)
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must be letters, digits, '.', '_' or '-', got {prefix!r}")
    return f"{prefix}-{k:05d}-of-{n:05d}.safetensors"


def save_sharded(state: Mapping[str, Tensor], directory: str | Path, max_bytes: int) -> Path:
    """Write ``state`` as safetensors shards of ≤ ``max_bytes`` plus the index; return its path.

    § "Sharding a checkpoint". Tensors are saved as contiguous copies (safetensors stores raw
    data; views, tied storage and autograd history are not part of a checkpoint). The folder
    must not hold another checkpoint: stale shards beside a new index would be confusing.
    """
    plan = plan_shards(state, max_bytes)
    if len(plan) > MAX_SHARDS:
        raise ValueError(f"{len(plan)} shards: more than {MAX_SHARDS}; raise max_bytes")
    directory = check.output_folder(directory, "directory")
    old = [
        p.name for p in directory.iterdir() if p.name == INDEX_NAME or SHARD_NAME.fullmatch(p.name)
    ]
    if old:
        raise FileExistsError(f"{directory} already holds a checkpoint ({sorted(old)[:3]}...)")
    weight_map, digests = {}, {}
    for k, names in enumerate(plan, start=1):
        file = shard_file_name(k, len(plan))
        save_file({n: state[n].detach().clone() for n in names}, str(directory / file))
        digests[file] = _file_sha256(directory / file)
        weight_map.update(dict.fromkeys(names, file))
    total = sum(tensor_bytes(t) for t in state.values())
    index = {"metadata": {"total_size": total, "sha256": digests}, "weight_map": weight_map}
    path = directory / INDEX_NAME
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path


def _is_checkpoint_file(name: str) -> bool:
    return name == INDEX_NAME or SHARD_NAME.fullmatch(name) is not None


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB pieces (a shard need not fit in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(2**20), b""):
            digest.update(piece)
    return digest.hexdigest()


def read_index(index_path: str | Path) -> dict:
    """The index, checked: bounded size, the expected keys and types, at least one tensor,
    shard names with no path in them, a SHA-256 for every shard it names, and a
    ``total_size`` that is a byte count. § "Sharding a checkpoint"."""
    path = check.regular_file(index_path, "index_path")
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise ValueError(f"index_path: {path} is larger than {MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(check.read_file(path, "index_path").decode("utf-8"))
        weight_map, digests = index["weight_map"], index["metadata"]["sha256"]
        total = index["metadata"]["total_size"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
        why = f"index_path: {path} is not a sharded-checkpoint index ({type(e).__name__}: {e})"
        raise ValueError(why) from None
    if not isinstance(weight_map, dict) or not isinstance(digests, dict) or not weight_map:
        raise ValueError(f"index_path: {path}: weight_map must name at least one tensor")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"index_path: {path}: total_size must be a byte count, got {total!r}")
    for file in list(weight_map.values()) + list(digests):
        # A name like "../../etc/passwd" must not make the loader read outside the folder.
        if not isinstance(file, str) or not SHARD_NAME.fullmatch(file):
            raise ValueError(f"index_path: {path} names a shard {file!r} that is not a shard")
        if file not in digests or not isinstance(digests[file], str):
            raise ValueError(f"index_path: {path} gives no SHA-256 for shard {file}")
    return index


def _verified_shards(index_path: Path, index: dict) -> dict[str, Path]:
    """Every shard the index names, after checking its bytes against the pinned SHA-256.

    A shard must be a regular file in the index's folder (not a link to elsewhere). The check
    reads each file once, in pieces; a file replaced *after* the check is not detected, so
    keep checkpoints where only you can write."""
    folder = index_path.parent.resolve()
    shards = {}
    for file, digest in index["metadata"]["sha256"].items():
        path = index_path.parent / file
        if not path.exists():
            raise FileNotFoundError(f"shard {file} named by {index_path.name} is missing")
        if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
            raise ValueError(f"shard {file} is not a regular file in {folder}")
        if _file_sha256(path) != digest:
            raise ValueError(f"shard {file} does not match its SHA-256 in {index_path.name}")
        shards[file] = path
    return shards


def iter_sharded(index_path: str | Path) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(name, tensor)`` one at a time, in the index's order, from verified shards.

    Every shard is checked against the index before the first tensor is yielded. Tensors
    are then read from one memory-mapped shard at a time, so the memory a load needs is
    about one shard's pages plus the tensors the caller keeps. § "Sharding a checkpoint".
    """
    index_path = check.regular_file(index_path, "index_path")
    index = read_index(index_path)
    shards = _verified_shards(index_path, index)
    for file, path in shards.items():
        wanted = [n for n, f in index["weight_map"].items() if f == file]
        try:
            shard = safe_open(str(path), framework="pt")
        except Exception as error:  # safetensors raises its own SafetensorError
            raise ValueError(f"shard {file} is not a safetensors file ({error})") from None
        with shard:
            stored = set(shard.keys())
            if stored != set(wanted):
                odd = sorted(stored ^ set(wanted))[:3]
                raise ValueError(f"shard {file} holds {odd}... unlike what {index_path.name} says")
            for name in wanted:
                yield name, shard.get_tensor(name)


def load_sharded(index_path: str | Path) -> dict[str, Tensor]:
    """The whole state dict from a sharded checkpoint, in the index's key order.
    § "Sharding a checkpoint"."""
    state = dict(iter_sharded(index_path))
    order = read_index(index_path)["weight_map"]
    return {name: state[name] for name in order}


def _check_state(state: object) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to tensors, got {type(state).__name__}")
    if not state:
        raise ValueError("state is empty")
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            got = f"{name!r}: {check.describe(tensor)}"
            raise TypeError(f"state must map str to tensors, got {got}")
        if tensor.is_meta or tensor.layout != torch.strided:
            raise ValueError(f"state[{name!r}] holds no plain data (meta or sparse tensor)")


def pack_nibbles(q: Tensor) -> Tensor:
    """Two signed 4-bit codes per byte along the last dimension: byte j holds q[2j] + 8 in its
    low nibble and q[2j+1] + 8 in its high one (an odd row is padded with a 0 code).
    q int8 in [−8, 7], shape (..., n) → uint8, shape (..., ⌈n/2⌉). § "What a file costs"."""
    if not isinstance(q, Tensor) or q.dtype != torch.int8:
        raise TypeError(f"q must be an int8 tensor, got {check.describe(q)}")
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension (codes are packed along the last)")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("q must hold 4-bit codes in [-8, 7]")
    if q.shape[-1] % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_nibbles(packed: Tensor, n: int) -> Tensor:
    """The inverse of `pack_nibbles`: uint8 (..., ⌈n/2⌉) → int8 codes (..., n)."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {check.describe(packed)}")
    n = check.integer(n, "n", low=0)
    if packed.ndim == 0 or packed.shape[-1] != (n + 1) // 2:
        raise ValueError(
            f"packed has {packed.shape[-1]} bytes per row; {n} codes need {(n + 1) // 2}"
        )
    low, high = (packed & 15).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).flatten(-2)[..., :n]


def quantize_state(state: Mapping[str, Tensor], bits: int = 8) -> dict[str, Tensor]:
    """Weights (tensors of ≥ 2 dimensions) as symmetric per-output-channel integer codes plus
    a float32 scale per channel (``name.scale``) and the weight's shape (``name.shape``,
    int64); everything else (biases) unchanged.

    8 bits: int8 codes, one byte per weight. 4 bits: `pack_nibbles`, half a byte. Together
    with `save_file` this is a real int8 / int4 file, every scale included.
    § "What a file costs"."""
    from minicompress import quantization as Q

    bits = check.choice(bits, "bits", [4, 8])
    _check_state(state)
    out = {}
    for name, tensor in state.items():
        if tensor.ndim < 2 or not tensor.is_floating_point():
            out[name] = tensor
            continue
        if tensor.numel() == 0:
            raise ValueError(f"state[{name!r}] is an empty weight")
        rows = tensor.detach().reshape(tensor.shape[0], -1)
        qp = Q.calc_qparams(rows, bits, symmetric=True, axis=0)
        codes = Q.quantize(rows, qp).to(torch.int8)
        out[name] = codes if bits == 8 else pack_nibbles(codes)
        out[f"{name}.scale"] = qp.scale.float()
        out[f"{name}.shape"] = torch.tensor(tensor.shape, dtype=torch.int64)
    return out


def dequantize_state(qstate: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Float32 tensors shaped like ``like`` from `quantize_state`'s codes and scales:
    ŵ = S_c · q for every weight of output channel c."""
    _check_state(qstate)
    _check_state(like)
    missing = [n for n in like if n not in qstate]
    if missing:
        raise ValueError(f"qstate has no {missing[:3]} (it was made from another model?)")
    out = {}
    for name, target in like.items():
        if f"{name}.scale" not in qstate:
            out[name] = qstate[name]
            continue
        stored = qstate.get(f"{name}.shape")
        if stored is None or stored.tolist() != list(target.shape):
            got = None if stored is None else stored.tolist()
            raise ValueError(
                f"{name}: codes of a weight of shape {got} do not fit {list(target.shape)}"
            )
        codes, scale, n = qstate[name], qstate[f"{name}.scale"], target[0].numel()
        if codes.dtype == torch.uint8:
            codes = unpack_nibbles(codes, n)
        # the codes' shape must be the target's, row for row: a same-size reshape would
        # silently scramble the weights
        if codes.shape != (target.shape[0], n) or scale.shape != (target.shape[0],):
            raise ValueError(
                f"{name}: codes {tuple(codes.shape)} and scales {tuple(scale.shape)} do not "
                f"fit a weight of shape {tuple(target.shape)}"
            )
        out[name] = (codes.float() * scale[:, None]).reshape(target.shape)
    return out


LOADERS = {
    "torch.load": (
        "s = torch.load(p, weights_only=True)\nt = sum(float(v.sum()) for v in s.values())"
    ),
    "torch.load, mmap": (
        "s = torch.load(p, weights_only=True, mmap=True)\n"
        "t = sum(float(v.sum()) for v in s.values())"
    ),
    "safetensors load_file": (
        "from safetensors.torch import load_file\n"
        "s = load_file(p); t = sum(float(v.sum()) for v in s.values())"
    ),
    "sharded, tensor by tensor": (
        "from minicompress.checkpoint import iter_sharded\n"
        "t = sum(float(v.sum()) for _, v in iter_sharded(p))"
    ),
}
_PEAK = """
import resource, sys, torch
from pathlib import Path


def status(key):  # Linux: kB figures of /proc/self/status
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024


p = sys.argv[1]
if Path("/proc/self/clear_refs").exists():
    # ru_maxrss survives exec (it would start at the parent's peak); VmHWM can be reset.
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    peak = lambda: status("VmHWM:")
else:  # macOS: ru_maxrss is in bytes there
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{loader}
print(peak() - before)
"""


def peak_load_memory(path: str | Path, loader: str, timeout: float = 120.0) -> int:
    """Bytes by which loading ``path`` with ``loader`` (a key of `LOADERS`) and reading every
    tensor raised the peak resident memory of a fresh Python process (after importing torch).

    A fresh process each time, because a process's peak never comes down: one measurement
    would hide the next. § "What a file costs"."""
    import subprocess
    import sys

    loader = check.choice(loader, "loader", list(LOADERS))
    path = check.regular_file(path)
    timeout = check.number(timeout, "timeout", 0.0, low_open=True)
    code = _PEAK.format(loader=LOADERS[loader])
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{loader} failed on {path}:\n{done.stderr[-1500:]}")
    return int(done.stdout.split()[-1])
