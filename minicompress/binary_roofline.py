"""A roofline for the packed binary product: the fastest `xnor_matmul` could possibly run.

For y = a bᵀ with a (batch, n) and b (m, n) stored as packed ±1 bits, every output is
``n − 2·popcount(a_i ⊕ b_j)`` summed over ⌈n/64⌉ 64-bit words (chapter "Binarization",
§ "The popcount identity"). Whatever the kernel, it must

- read both packed operands at least once: ``8·⌈n/64⌉·(m + batch)`` bytes, and
- xor, popcount and add ``batch·m·⌈n/64⌉`` words,

so its time is at least ``max(bytes / bandwidth, words / word rate)``: the larger of a
memory bound and a compute bound (the roofline model, Williams, Waterman & Patterson 2009;
`lowbit_matmul.roofline_time` is the same model with FLOPs for words).
The int64 outputs (``8·batch·m`` bytes) are written, not read, and are left out.

The word rate depends on the instructions (`popcount_words_per_cycle`):

- scalar ``popcnt`` (x86-64, every CPU since about 2008): one 64-bit word per instruction,
  typically one per cycle per core — uops.info measures ``popcnt`` at 1 per cycle on
  Intel's Alder Lake P-cores, where only port 1 runs it; some cores (AMD Zen) have more
  units, so this is the usual case, not a law. The xor and add go to other integer ports,
  so the popcount is the limit (`SCALAR_POPCNT`);
- AVX-512 VPOPCNTDQ (Intel from Ice Lake, AMD from Zen 4): ``vpopcntq`` counts 8 words per
  instruction; with the ``vpxorq`` and ``vpaddq`` each group of 8 words needs, that is 3
  vector instructions per 8 words, and at 2 of them per cycle (typical: two 512-bit vector
  ports; assumed, not measured here) 16/3 ≈ 5.3 words per cycle (`AVX512_VPOPCNTDQ`).

At 1024×1024 the packed weights are 128 KiB: they fit a core's L2 cache (1–2 MiB on recent
x86 cores), so the bandwidth that matters for a repeated product is L2's, to be measured on
the machine (the binarization benchmark does), not DRAM's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from minicompress import _validate as check

__all__ = [
    "AVX512_VPOPCNTDQ",
    "SCALAR_POPCNT",
    "XnorRoofline",
    "popcount_words_per_cycle",
    "xnor_roofline",
]

WORD_BYTES = 8  # one packed int64 word holds 64 ±1 values
OPS_PER_WORD = 3  # xor, popcount, add


def popcount_words_per_cycle(
    lanes: int, popcounts_per_cycle: float, alu_ops_per_cycle: float
) -> float:
    """Words one core can xor, popcount and add per cycle: ``lanes · min(p, u / 3)``.

    ``lanes`` 64-bit words per instruction (1 for ``popcnt``, 8 for a 512-bit ``vpopcntq``),
    ``p`` popcount instructions per cycle, ``u`` instructions per cycle on the units that run
    the xor, popcount and add (3 per group of ``lanes`` words). Scalar, typical x86:
    ``(1, 1, 4)`` gives 1; AVX-512 VPOPCNTDQ at two vector instructions per cycle:
    ``(8, 1, 2)`` gives 16/3. (§ "Speed, measured honestly")
    """
    check.integer(lanes, "lanes", 1)
    p = check.number(popcounts_per_cycle, "popcounts_per_cycle", 0.0, low_open=True)
    u = check.number(alu_ops_per_cycle, "alu_ops_per_cycle", 0.0, low_open=True)
    return lanes * min(p, u / OPS_PER_WORD)


SCALAR_POPCNT = popcount_words_per_cycle(1, 1.0, 4.0)  # 1 word per cycle
AVX512_VPOPCNTDQ = popcount_words_per_cycle(8, 1.0, 2.0)  # 16/3 words per cycle


@dataclass(frozen=True)
class XnorRoofline:
    """The two lower bounds on a packed binary product's time, and what they count."""

    bytes_read: int  # 8·⌈n/64⌉·(m + batch)
    words: int  # batch·m·⌈n/64⌉ xor-popcount-adds
    memory_s: float  # bytes_read / bandwidth
    compute_s: float  # words / word rate

    @property
    def seconds(self) -> float:
        """The larger of ``memory_s`` and ``compute_s`` (the roofline), in seconds."""
        return max(self.memory_s, self.compute_s)

    @property
    def bound(self) -> str:
        """Which limit is the larger, ``"memory"`` or ``"compute"``."""
        return "memory" if self.memory_s >= self.compute_s else "compute"

    def to_dict(self) -> dict:
        """The four fields plus ``seconds`` and ``bound``, for a benchmark's JSON."""
        return {**asdict(self), "seconds": self.seconds, "bound": self.bound}


def xnor_roofline(
    m: int, n: int, batch: int, word_popcounts_per_cycle: float, bytes_per_cycle: float,
    ghz: float,
) -> XnorRoofline:  # fmt: skip
    """Lower bounds on the time of ``xnor_matmul`` for (batch, n) × (m, n)ᵀ packed operands.

    ``bytes_read = 8·⌈n/64⌉·(m + batch)``, ``words = batch·m·⌈n/64⌉``;
    ``memory_s = bytes_read / (bytes_per_cycle · ghz·10⁹)`` and
    ``compute_s = words / (word_popcounts_per_cycle · ghz·10⁹)``; the roofline is the larger
    (`XnorRoofline.seconds`). Rates are per core: pass all cores' sums for a parallel kernel.
    (§ "Speed, measured honestly")
    """
    check.integer(m, "m", 1)
    check.integer(n, "n", 1)
    check.integer(batch, "batch", 1)
    rate = check.number(word_popcounts_per_cycle, "word_popcounts_per_cycle", 0.0, low_open=True)
    bandwidth = check.number(bytes_per_cycle, "bytes_per_cycle", 0.0, low_open=True)
    hz = check.number(ghz, "ghz", 0.0, low_open=True) * 1e9
    words_per_row = math.ceil(n / 64)
    bytes_read = WORD_BYTES * words_per_row * (m + batch)
    words = batch * m * words_per_row
    return XnorRoofline(bytes_read, words, bytes_read / (bandwidth * hz), words / (rate * hz))
