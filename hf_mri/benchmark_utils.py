"""Benchmark plumbing: interleaved timing, peak RSS, matmul peak, FLOP counting, CPU facts and markdown tables."""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "Row",
    "count_flops",
    "cpu_facts",
    "forever",
    "interleave",
    "markdown_table",
    "matmul_peak_gflops",
    "peak_rss_mib",
    "reset_peak_rss",
]


@dataclass
class Row:
    """One measured configuration: `seconds` per unit of work (a batch, or an epoch of `images` images)."""

    section: str
    name: str
    image_size: int
    batch_size: int
    seconds: list[float]
    images: int  # images per unit of work
    gflop_per_image: float = 0.0
    peak_rss_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min_s(self) -> float:
        """The fastest sample: on a shared machine, the least disturbed by other processes."""
        return min(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median_s

    def to_dict(self, fp32_peak_gflops: float) -> dict[str, Any]:
        gflops = self.gflop_per_image * self.images_per_s
        batches = max(self.images / self.batch_size, 1.0)
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("seconds", "extra")},
            **self.extra,
            "samples": len(self.seconds),
            "median_s": self.median_s,
            "min_s": self.min_s,
            "spread": (max(self.seconds) - min(self.seconds)) / self.median_s,
            "images_per_s": self.images_per_s,
            "ms_per_batch": 1000 * self.median_s / batches,
            "ms_per_image": 1000 * self.median_s / self.images,
            "gflop_per_s": gflops,
            "pct_fp32_peak": 100 * gflops / fp32_peak_gflops if fp32_peak_gflops else 0.0,
        }


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process's resident memory (Linux); no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory since the last `reset_peak_rss` (Linux VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as handle:
            found = re.search(r"VmHWM:\s+(\d+)\s+kB", handle.read())
        if found:
            return int(found.group(1)) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def interleave(cases: dict[str, Callable[[], list[float]]], rounds: int) -> tuple[dict[str, list[float]], dict]:
    """Run every case once per round, in turn (A B A B ...), so a change in machine load hits all of them alike.

    Each case returns its own timings (warm-up already dropped). Returns the pooled timings per case and each case's
    peak RSS in MiB (the high-water mark while that case ran, everything else resident included).
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    peaks: dict[str, float] = dict.fromkeys(cases, 0.0)
    for _ in range(rounds):
        for name, run in cases.items():
            reset_peak_rss()
            times[name] += run()
            peaks[name] = max(peaks[name], peak_rss_mib())
    return times, peaks


def forever(loader: Any) -> Iterator[Any]:
    """Batches of `loader`, epoch after epoch."""
    while True:
        yield from loader


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """Measured matmul throughput (best of `repeats` after a warm-up): the practical compute ceiling."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def count_flops(run: Callable[[], Any]) -> float:
    """FLOPs (conv/matmul ops, forward and any backward inside `run`) counted by `torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def cpu_facts() -> dict[str, Any]:
    """What limits CPU speed: core count, ISA flags relevant to bf16, oneDNN bf16 support, load average."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
        flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split())
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1).strip()
    except (OSError, AttributeError):
        pass
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = None
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_flags": {flag: flag in flags for flag in wanted},
        "mkldnn_bf16_supported": mkldnn_bf16,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The measured rows as a GitHub markdown table."""
    head = (
        "| section | case | px | batch | images/s | ms/batch | ms/image | GFLOP/img | GFLOP/s | % fp32 peak "
        "| peak RSS MiB | n |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['section']} | {r['name']} | {r['image_size']} | {r['batch_size']} | {r['images_per_s']:.2f} "
            f"| {r['ms_per_batch']:.0f} | {r['ms_per_image']:.1f} | {r['gflop_per_image']:.2f} "
            f"| {r['gflop_per_s']:.1f} | {r['pct_fp32_peak']:.0f} | {r['peak_rss_mib']:.0f} | {r['samples']} |"
        )
    return "\n".join(lines)
