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
the machine (`measure_rates`, with the clock), not DRAM's; `kernel_us` times the compiled
kernels without Python's call overhead, which is what the roofline bounds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
from torch import Tensor

from minicompress import _validate as check

__all__ = [
    "AVX512_VPOPCNTDQ",
    "SCALAR_POPCNT",
    "MachineRates",
    "XnorRoofline",
    "has_avx512_vpopcntdq",
    "kernel_us",
    "measure_rates",
    "popcount_words_per_cycle",
    "word_rate",
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


# ---- this machine: its popcount instructions, clock and L2 bandwidth, measured ---------------

RATE_BUFFER_BYTES = 128 * 1024  # the packed 1024×1024 weights
CLOCK_STEPS = 20_000  # multiply-adds in the clock chain
CLOCK_CYCLES_PER_STEP = 4  # imul r64 (3 cycles) then add (1), dependent
READ_REPS = 20  # passes over the buffer per timed call


def has_avx512_vpopcntdq() -> bool:
    """Whether the CPU reports ``avx512_vpopcntdq`` in /proc/cpuinfo (False where there is none,
    e.g. macOS, or on ARM). It decides `word_rate`. (§ "How fast could it be? A roofline")
    """
    from minicompress.measure import _cpu  # the one /proc/cpuinfo reader

    return "avx512_vpopcntdq" in _cpu()[1]


def word_rate() -> float:
    """This CPU's assumed words per cycle: `AVX512_VPOPCNTDQ` where `has_avx512_vpopcntdq`,
    else `SCALAR_POPCNT` (one ``popcnt`` per cycle; also assumed on ARM, unmeasured).
    (§ "How fast could it be? A roofline")
    """
    return AVX512_VPOPCNTDQ if has_avx512_vpopcntdq() else SCALAR_POPCNT


@dataclass(frozen=True)
class MachineRates:
    """One core's clock and L2 bandwidth, as `measure_rates` found them."""

    ghz: float  # from a chain of dependent multiply-adds, 4 cycles a step
    l2_read_gb_s: float  # reading a 128 KiB buffer over and over (10⁹ bytes per second)
    l2_copy_gb_s: float  # copying it: bytes copied (each read once and written once) per second

    @property
    def bytes_per_cycle(self) -> float:
        """L2 read bandwidth in bytes per clock cycle, ``l2_read_gb_s / ghz``."""
        return self.l2_read_gb_s / self.ghz


def _median_us(fn: Callable[[], object], repeats: int, per_call: int = 1, warmup: int = 5) -> float:
    """Median over ``repeats`` timings of ``fn`` (µs), divided by the ``per_call`` it repeats."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times) / per_call


@cache
def _probes() -> dict[str, Callable]:
    """Compiled loops for the clock and the bandwidth, compiled once (numba)."""
    from minicompress.binarization import _numba_popcount

    numba, _ = _numba_popcount("measure_rates")

    @numba.njit(nogil=True)
    def clock_chain(x, steps):  # imul r64 (3 cycles) then add (1): 4 dependent cycles a step
        for _ in range(steps):
            x = x * 0x9E3779B97F4A7C15 + (x >> 31)
        return x

    @numba.njit(nogil=True)
    def read(buf, reps):  # xor of every word: LLVM vectorises it, the loads are the limit
        s = 0
        for _ in range(reps):
            for k in range(buf.shape[0]):
                s ^= buf[k]
        return s

    return {"clock": clock_chain, "read": read}


def measure_rates() -> MachineRates:
    """Measure this core's clock and its L2 read and copy bandwidth (medians; a few ms after a
    one-off compile of about a second). Needs numba.

    ``ghz = 4 · steps / t`` for a chain of ``steps`` dependent multiply-adds (``imul`` 3 cycles
    plus ``add`` 1, as on x86 since Sandy Bridge and AMD Zen: an assumption, checked nowhere;
    a shorter chain reads as a higher clock); ``l2_read_gb_s = bytes / t`` for an xor over
    every word of a 128 KiB buffer (the packed 1024×1024 weights, resident in L2 after the
    first pass), ``l2_copy_gb_s`` for ``np.copyto`` of it. Run at one thread; on a shared
    machine the medians are still slower than an idle core's.
    (§ "How fast could it be? A roofline")
    """
    probes = _probes()
    chain_us = _median_us(lambda: probes["clock"](3, CLOCK_STEPS), 200) - _median_us(
        lambda: probes["clock"](3, 0), 200
    )
    buf = np.arange(RATE_BUFFER_BYTES // 8, dtype=np.int64)
    read_us = _median_us(lambda: probes["read"](buf, READ_REPS), 300, READ_REPS)
    dst = np.empty_like(buf)
    copy_us = _median_us(lambda: np.copyto(dst, buf), 300)
    return MachineRates(
        ghz=CLOCK_CYCLES_PER_STEP * CLOCK_STEPS / chain_us / 1e3,
        l2_read_gb_s=buf.nbytes / read_us / 1e3,
        l2_copy_gb_s=buf.nbytes / copy_us / 1e3,
    )


KERNELS = ("numba", "blocked", "word_major")  # xnor_matmul_numba, _blocked, _word_major


@cache
def _repeated(name: str) -> Callable:
    """``loop(a, b, n, mask, reps)``: the one-thread compiled kernel ``name``, ``reps`` times."""
    from minicompress import binarization as B

    numba, _ = B._numba_popcount("kernel_us")
    if name == "numba":
        kernel = B._numba_kernel

        @numba.njit(nogil=True)
        def call(a, b, n, mask):  # the kernel writes into its out argument
            out = np.empty((a.shape[0], b.shape[0]), dtype=np.int64)
            kernel(a, b, n, mask, out)
            return out

    else:
        call = (B._blocked_kernels if name == "blocked" else B._word_major_kernels)[False]

    @numba.njit(nogil=True)
    def loop(a, b, n, mask, reps):
        for _ in range(reps):
            out = call(a, b, n, mask)
        return out

    return loop


def kernel_us(
    name: str, a_packed: Tensor, b_packed: Tensor, n: int, reps: int = 20, repeats: int = 300
) -> float:
    """Median µs of one product by a compiled kernel at one thread, without the Python call.

    ``name``: ``"numba"`` (`binarization.xnor_matmul_numba`'s kernel), ``"blocked"`` or
    ``"word_major"`` (``b_packed`` then word-major, ``pack_bits(b).T.contiguous()``). The
    kernel runs ``reps`` times inside one compiled loop; the median over ``repeats`` such
    calls, divided by ``reps``, is what `xnor_roofline` bounds (the public functions add
    their checks, dispatch and output tensor: at batch 1 on 1024×1024, more than the
    kernel itself). ``xnor_matmul_numba``'s kernel is
    numba-parallel: run it with ``numba.set_num_threads(1)`` to time one core.
    (§ "How fast could it be? A roofline")
    """
    from minicompress import binarization as B

    name = check.choice(name, "name", KERNELS)
    check.integer(reps, "reps", 1)
    check.integer(repeats, "repeats", 1)
    public = {"numba": B.xnor_matmul_numba,
              "blocked": B.xnor_matmul_numba_blocked,
              "word_major": B.xnor_matmul_numba_word_major}[name]  # fmt: skip
    public(a_packed, b_packed, n)  # checks the operands and compiles the kernel
    a, b = a_packed.contiguous().numpy(), b_packed.contiguous().numpy()
    loop, mask = _repeated(name), B._last_word_mask(n)
    return _median_us(lambda: loop(a, b, n, mask, reps), repeats, reps)
