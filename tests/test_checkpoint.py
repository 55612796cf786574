"""Sharded safetensors checkpoints: round trip, the size limit, and refusing bad indexes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from minicompress import checkpoint as C
from minicompress.models import LeNet300100


@pytest.fixture
def state():
    torch.manual_seed(0)
    return LeNet300100().state_dict()


def test_round_trip_is_bit_exact_and_keeps_key_order(tmp_path, state):
    index = C.save_sharded(state, tmp_path, max_bytes=200_000)
    loaded = C.load_sharded(index)
    assert list(loaded) == list(state)
    for k in state:
        assert torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype


def test_every_shard_is_within_the_limit_unless_one_tensor_is_larger(tmp_path, state):
    limit = 150_000  # fc1.weight alone is 940,800 bytes: a shard of its own
    plan = C.plan_shards(state, limit)
    for names in plan:
        size = sum(C.tensor_bytes(state[n]) for n in names)
        assert size <= limit or len(names) == 1
    assert [n for names in plan for n in names] == list(state)
    largest = max(state, key=lambda n: C.tensor_bytes(state[n]))
    assert C.tensor_bytes(state[largest]) > limit and [largest] in plan


def test_greedy_plan_on_known_sizes():
    state = {k: torch.zeros(n) for k, n in [("a", 10), ("b", 10), ("c", 30), ("d", 5)]}
    assert C.plan_shards(state, 80) == [["a", "b"], ["c"], ["d"]]  # 40+40 = 80; 120 alone
    assert C.plan_shards(state, 1) == [["a"], ["b"], ["c"], ["d"]]
    assert C.plan_shards(state, 10**6) == [["a", "b", "c", "d"]]


def test_index_is_the_hugging_face_layout(tmp_path, state):
    index_path = C.save_sharded(state, tmp_path, max_bytes=500_000)
    index = json.loads(index_path.read_text())
    assert index_path.name == "model.safetensors.index.json"
    assert index["metadata"]["total_size"] == sum(C.tensor_bytes(t) for t in state.values())
    files = sorted(set(index["weight_map"].values()))
    n = len(files)
    assert files == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    # each shard is an ordinary safetensors file
    merged = {}
    for f in files:
        merged |= load_file(tmp_path / f)
    assert set(merged) == set(state)


def test_lazy_iteration_yields_one_tensor_at_a_time(tmp_path, state):
    index = C.save_sharded(state, tmp_path, max_bytes=100_000)
    iterator = C.iter_sharded(index)
    name, tensor = next(iterator)
    assert name == next(iter(state)) and torch.equal(tensor, state[name])


def test_missing_shard_is_refused(tmp_path, state):
    index = C.save_sharded(state, tmp_path, max_bytes=100_000)
    (tmp_path / C.shard_file_name(2, len(C.plan_shards(state, 100_000)))).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        C.load_sharded(index)


def test_altered_shard_is_refused(tmp_path, state):
    index = C.save_sharded(state, tmp_path, max_bytes=100_000)
    shard = tmp_path / C.shard_file_name(1, len(C.plan_shards(state, 100_000)))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        C.load_sharded(index)


def test_swapped_shards_are_refused(tmp_path, state):
    index = C.save_sharded(state, tmp_path, max_bytes=100_000)
    n = len(C.plan_shards(state, 100_000))
    a, b = tmp_path / C.shard_file_name(1, n), tmp_path / C.shard_file_name(2, n)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(ValueError, match="SHA-256"):
        C.load_sharded(index)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda i: i["weight_map"].update({"x": "../../etc/passwd"}), "not a shard"),
        (lambda i: i["metadata"]["sha256"].clear(), "no SHA-256"),
        (lambda i: i.pop("weight_map"), "not a sharded-checkpoint index"),
        (
            lambda i: i["weight_map"].update({"extra.weight": next(iter(i["metadata"]["sha256"]))}),
            "unlike what",
        ),
    ],
)
def test_crafted_index_is_refused(tmp_path, state, edit, message):
    index_path = C.save_sharded(state, tmp_path, max_bytes=100_000)
    index = json.loads(index_path.read_text())
    edit(index)
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message):
        C.load_sharded(index_path)


def test_not_json_is_refused(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b"\x80\x04 pickle?")
    with pytest.raises(ValueError, match="not a sharded-checkpoint index"):
        C.load_sharded(path)


@pytest.mark.parametrize("max_bytes", [0, -5])
def test_size_limit_must_be_positive(state, max_bytes):
    with pytest.raises(ValueError, match="max_bytes"):
        C.plan_shards(state, max_bytes)


@pytest.mark.parametrize(
    "bad, error", [({}, ValueError), ([1, 2], TypeError), ({"w": [1.0]}, TypeError)]
)
def test_bad_state_is_refused(bad, error):
    with pytest.raises(error, match="state"):
        C.plan_shards(bad, 100)


def test_nibbles_round_trip_and_layout():
    q = torch.tensor([[-8, 7, 0, -1, 3]], dtype=torch.int8)
    packed = C.pack_nibbles(q)
    # low nibble first, codes offset by 8; the odd row is padded with code 0 (nibble 8)
    assert packed.tolist() == [[0 | 15 << 4, 8 | 7 << 4, 11 | 8 << 4]]
    assert torch.equal(C.unpack_nibbles(packed, 5), q)
    rows = torch.randint(
        -8, 8, (4, 10), dtype=torch.int8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(C.unpack_nibbles(C.pack_nibbles(rows), 10), rows)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.zeros(2, dtype=torch.int32), TypeError, "int8"),
        (torch.tensor([9], dtype=torch.int8), ValueError, "4-bit"),
    ],
)
def test_pack_refuses_what_does_not_fit(bad, error, message):
    with pytest.raises(error, match=message):
        C.pack_nibbles(bad)


def test_unpack_refuses_a_wrong_length():
    with pytest.raises(ValueError, match="bytes per row"):
        C.unpack_nibbles(torch.zeros(1, 3, dtype=torch.uint8), 8)


@pytest.mark.parametrize("bits, dtype, step", [(8, torch.int8, 127), (4, torch.uint8, 7)])
def test_quantized_state_stores_codes_and_scales(state, bits, dtype, step):
    q = C.quantize_state(state, bits)
    assert q["fc1.weight"].dtype == dtype and q["fc1.weight.scale"].shape == (300,)
    assert torch.equal(q["fc1.bias"], state["fc1.bias"])
    restored = C.dequantize_state(q, state)
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        w = state[name]
        scale = w.abs().amax(1) / step  # symmetric per output channel
        assert restored[name].shape == w.shape
        # every weight within half a step of its channel's grid
        assert ((restored[name] - w).abs() <= scale[:, None] / 2 + 1e-6).all()


def test_quantized_state_of_a_conv_model_round_trips_shapes():
    from minicompress.models import LeNet5

    torch.manual_seed(0)
    state = LeNet5().state_dict()
    restored = C.dequantize_state(C.quantize_state(state, 4), state)
    assert all(restored[k].shape == state[k].shape for k in state)


def test_quantize_state_refuses_other_widths(state):
    with pytest.raises(ValueError, match="bits"):
        C.quantize_state(state, 3)


def test_peak_load_memory_sees_a_whole_file_load(tmp_path):
    big = {"w": torch.zeros(4096, 2048)}  # 32 MiB
    torch.save(big, tmp_path / "big.pt")
    extra = C.peak_load_memory(tmp_path / "big.pt", "torch.load")
    assert 0.9 * 32 * 2**20 < extra < 3 * 32 * 2**20


def test_peak_load_memory_refuses_an_unknown_loader(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="loader"):
        C.peak_load_memory(tmp_path / "x.pt", "pickle.load")


def test_a_folder_with_a_checkpoint_is_not_overwritten(tmp_path, state):
    C.save_sharded(state, tmp_path, max_bytes=100_000)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        C.save_sharded(state, tmp_path, max_bytes=10**7)


def test_tied_tensors_are_saved_as_copies(tmp_path):
    weight = torch.randn(4, 3)
    index = C.save_sharded({"a": weight, "b": weight}, tmp_path, max_bytes=10**6)
    loaded = C.load_sharded(index)
    assert torch.equal(loaded["a"], weight) and torch.equal(loaded["b"], weight)


def test_meta_tensors_are_refused():
    with pytest.raises(ValueError, match="meta or sparse"):
        C.plan_shards({"w": torch.empty(3, device="meta")}, 100)


def test_a_symlinked_shard_is_refused(tmp_path, state):
    index = C.save_sharded(state, tmp_path / "ckpt", max_bytes=100_000)
    shard = tmp_path / "ckpt" / C.shard_file_name(1, len(C.plan_shards(state, 100_000)))
    outside = tmp_path / "outside.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(ValueError, match="not a regular file"):
        C.load_sharded(index)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not a sharded-checkpoint index"),
        ('{"metadata": {"total_size": 0, "sha256": {}}, "weight_map": {}}', "at least one"),
        ('{"metadata": {"total_size": -5, "sha256": {}}, "weight_map": {"a": "m"}}', "total_size"),
        (
            '{"metadata": {"total_size": 4, "sha256": {}}, "weight_map": {"a": ["x"]}}',
            "not a shard",
        ),
        (
            '{"metadata": {"total_size": 4, "sha256": {"m-00001-of-00001.safetensors\\n": "0"}},'
            ' "weight_map": {"a": "m-00001-of-00001.safetensors\\n"}}',
            "not a shard",
        ),
    ],
)
def test_malformed_indexes_are_refused(tmp_path, text, message):
    path = tmp_path / C.INDEX_NAME
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        C.read_index(path)


@pytest.mark.parametrize(
    "k, n, prefix", [(0, 1, "model"), (2, 1, "model"), (1, 100_000, "model"), (1, 1, "../x")]
)
def test_shard_file_names_are_checked(k, n, prefix):
    with pytest.raises(ValueError):
        C.shard_file_name(k, n, prefix)


def test_dequantize_refuses_codes_of_another_shape(state):
    q = C.quantize_state({"w": torch.randn(10, 4)}, 8)
    with pytest.raises(ValueError, match="do not fit"):
        C.dequantize_state(q, {"w": torch.ones(4, 10)})
    with pytest.raises(ValueError, match="qstate has no"):
        C.dequantize_state(q, {"v": torch.ones(10, 4)})
    q4 = C.quantize_state({"w": torch.randn(3, 5)}, 4)
    with pytest.raises(ValueError):
        C.dequantize_state(q4, {"w": torch.ones(3, 6)})
