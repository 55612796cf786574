"""Exported graphs (ONNX, torch.export) reload and compute what the PyTorch model computes."""

from __future__ import annotations

import pytest
import torch

from minicompress import backends, deploy
from minicompress.models import LeNet5


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LeNet5().eval()


def test_exported_program_round_trip_with_any_batch(tmp_path, model):
    x = torch.randn(1, 1, 28, 28)  # a batch of one must not freeze the batch size
    path = deploy.to_exported_program(model, x, tmp_path / "m.pt2")
    loaded = deploy.load_exported_program(path)
    images = torch.randn(5, 1, 28, 28)
    assert deploy.max_output_difference(model, loaded, images) < 1e-5
    assert deploy.agreement(model, loaded, images) == 1.0


def test_exported_program_does_not_store_the_whole_base_tensor(tmp_path, model):
    test_set = torch.randn(5000, 1, 28, 28)  # 15.7 MB; a view of it must not be saved
    path = deploy.to_exported_program(model, test_set[:1], tmp_path / "m.pt2")
    assert path.stat().st_size < 2 * 2**20


def test_onnx_round_trip(tmp_path, model):
    path = deploy.to_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    images = torch.randn(7, 1, 28, 28)
    assert deploy.max_output_difference(model, backends.OnnxModel(path), images) < 1e-4


def test_bad_input_is_refused(tmp_path, model):
    with pytest.raises(TypeError, match="model"):
        deploy.to_exported_program("not a model", torch.randn(1, 1, 28, 28), tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        deploy.load_exported_program(tmp_path / "missing.pt2")
    with pytest.raises(TypeError, match="images"):
        deploy.agreement(model, model, [1, 2])


def test_a_crafted_program_is_refused_before_it_runs_code(tmp_path, model):
    import zipfile

    path = deploy.to_exported_program(model, torch.randn(2, 1, 28, 28), tmp_path / "m.pt2")
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            import io

            return (io.open, (str(marker), "w"))

    torch.save({"x": Payload()}, tmp_path / "payload.pt")
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(crafted, "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member.endswith("sample_inputs/model.pt"):
                data = (tmp_path / "payload.pt").read_bytes()
            dst.writestr(member, data)
    with pytest.raises(ValueError, match="not weights-only"):
        deploy.load_exported_program(crafted)
    assert not marker.exists()


def test_junk_is_not_a_program(tmp_path):
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch.export archive"):
        deploy.load_exported_program(tmp_path / "junk.pt2")


def test_outputs_of_another_shape_are_refused_and_training_mode_is_kept():
    a, b = torch.nn.Linear(4, 1), torch.nn.Linear(4, 3)
    a.train()
    with pytest.raises(ValueError, match="shape"):
        deploy.max_output_difference(a, b, torch.randn(2, 4))
    deploy.agreement(a, a, torch.randn(2, 4))
    assert a.training
