"""The recorded benchmark results the chapters read (benchmarks/README.md, "Recorded results").

Each `benchmarks/results/<script>.json` must be the last line of a full run of
`benchmarks/<script>.py`: one JSON object with the machine it ran on, its wall time and
its targets, not a ``--quick`` smoke test. And every file a chapter reads must exist.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
READ = re.compile(r"benchmarks/results/([a-z_]+\.json)")


def chapter_reads() -> set[str]:
    names = set()
    for path in (ROOT / "book").glob("*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                names.update(READ.findall("".join(cell["source"])))
    return names


def test_every_file_a_chapter_reads_is_recorded():
    recorded = {path.name for path in RESULTS}
    assert chapter_reads() <= recorded, chapter_reads() - recorded


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_recorded_result_is_one_full_run(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") <= 1, "one line: the script's last line, unchanged"
    result = json.loads(text)
    assert (ROOT / "benchmarks" / path.name.replace(".json", ".py")).is_file()
    assert {"machine", "seconds", "targets_met"} <= result.keys()
    assert "torch" in result["machine"], "machine: measure.machine()'s line"
    assert not result.get("quick", False), "a --quick run is a smoke test, not a result"


def _benchmark(name: str):
    """Load benchmarks/<name>.py without putting benchmarks/ on sys.path or in sys.modules."""
    spec = importlib.util.spec_from_file_location(
        f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quantization_speedup_error_is_for_the_ratio_of_medians():
    # benchmarks/quantization.py: `se` belongs to `speedup` (a ratio of medians), by
    # resampling rounds in pairs; the same timings give the same error
    quantization = _benchmark("quantization")
    base = [1.0, 1.1, 0.9, 1.3, 1.0, 1.2, 0.95]
    steady = quantization._speedup(base, [b / 3 for b in base])
    assert steady["speedup"] == 3.0 and steady["se"] == 0.0
    noisy = quantization._speedup(base, [0.3, 0.5, 0.3, 0.4, 0.3, 0.35, 0.45])
    assert noisy["se"] > 0.1 and noisy == quantization._speedup(
        base, [0.3, 0.5, 0.3, 0.4, 0.3, 0.35, 0.45]
    )
    assert noisy["speedup"] == round(statistics.median(base) / 0.35, 2)
