"""run_benchmark(): the CPU speed comparisons side by side in one process, as a markdown table and a JSON file."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict

from . import benchmark_cases as cases
from . import benchmark_inference as inference
from .benchmark_utils import cpu_facts, markdown_table, matmul_peak_gflops
from .data import load_splits

__all__ = ["TARGETS", "BenchmarkArguments", "format_report", "run_benchmark"]

logger = logging.getLogger(__name__)

# ratio -> (target, "min" if the ratio should be at least the target, "max" if at most)
TARGETS = {
    "trainer_vs_plain_loop": (0.95, "min"),
    "bf16_channels_last_train_speedup": (1.5, "min"),
    "cached_features_epoch_speedup": (10.0, "min"),
    "onnx_vs_eager_latency": (0.7, "max"),
    "pipeline_vs_train_throughput": (5.0, "min"),
}
# setting -> (full run, --quick)
DEFAULTS = {
    "image_size": (128, 96),
    "cache_image_size": (224, 160),
    "batch_size": (16, 8),
    "steps": (4, 3),
    "rounds": (3, 2),
    "epochs": (2, 1),
    "latency_iters": (5, 3),
}


@dataclass
class BenchmarkArguments:
    """What to measure and how long; unset sizes and counts take the full-run or the `--quick` default."""

    quick: bool = field(default=False, metadata={"help": "Smaller images and fewer steps: under 10 minutes."})
    data_dir: str | None = field(default=None, metadata={"help": "Image folder (default: the bundled sample)."})
    output: str = field(default="benchmark_results.json", metadata={"help": "Where the JSON results go."})
    image_size: int | None = field(default=None, metadata={"help": "Training comparisons (128; quick 96)."})
    cache_image_size: int | None = field(default=None, metadata={"help": "Cached-features epochs (224; quick 160)."})
    infer_image_size: int = field(default=224, metadata={"help": "Batch-1 inference latency and ONNX parity."})
    batch_size: int | None = field(default=None, metadata={"help": "Training batch size (16; quick 8)."})
    steps: int | None = field(default=None, metadata={"help": "Measured train steps per case per round (4; 3)."})
    rounds: int | None = field(default=None, metadata={"help": "Interleaved rounds A B A B ... (3; 2)."})
    epochs: int | None = field(default=None, metadata={"help": "Measured epochs per cached/uncached case (2; 1)."})
    latency_iters: int | None = field(default=None, metadata={"help": "Batch-1 calls per case per round (5; 3)."})
    max_images: int = field(default=128, metadata={"help": "Use at most this many images of each split."})
    threads: int | None = field(default=None, metadata={"help": "torch / ONNX Runtime threads (default: torch's)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for the image pipeline."})
    attribution: bool | None = field(
        default=None, metadata={"help": "Also time fp32+channels_last and bf16 alone (default: full run only)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the splits, initial weights and shuffling."})
    model_overrides: str | None = field(
        default=None, metadata={"help": 'MriVggConfig fields as JSON, e.g. \'{"head": "compact"}\' (default: VGG16).'}
    )

    def __post_init__(self) -> None:
        for name, (full, quick) in DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else full)
        if self.attribution is None:
            self.attribution = not self.quick


def _load(args: BenchmarkArguments) -> DatasetDict:
    splits, _ = load_splits(args.data_dir, seed=args.seed)
    return DatasetDict(
        {
            name: part.shuffle(seed=args.seed).select(range(min(len(part), args.max_images)))
            for name, part in splits.items()
        }
    )


def run_benchmark(args: BenchmarkArguments) -> dict[str, Any]:
    """Measure every comparison, write `args.output` (JSON) and return the results (`format_report` renders them)."""
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    facts = cpu_facts()
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    logger.info("Matmul peak on %d threads: %.1f GFLOP/s fp32, %.1f bf16", threads, peaks["fp32"], peaks["bf16"])
    splits = _load(args)
    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    rows, ratios = [], {}
    with cases.scratch_dir() as workdir:
        ctx = cases.BenchContext(
            splits, overrides, args.batch_size, args.steps, args.rounds, args.epochs, args.latency_iters,
            threads, args.num_workers, args.seed, Path(workdir), attribution=args.attribution,
        )  # fmt: skip
        csize = args.cache_image_size
        plan = [
            ("trainer vs plain loop", lambda: cases.trainer_vs_plain(ctx, args.image_size)),
            ("bf16 + channels_last", lambda: cases.precision_layout(ctx, args.image_size)),
            ("cached features", lambda: cases.cached_features(ctx, csize)),
            ("ONNX Runtime latency", lambda: inference.onnx_latency(ctx, args.infer_image_size)),
        ]
        if args.attribution:  # what the cache buys when the head is small (the default VGG head has 120M weights)
            plan.append(("cached features, compact head", lambda: cases.cached_features(ctx, csize, head="compact")))
        for title, run in plan:
            step_start = time.perf_counter()
            new_rows, new_ratios = run()
            rows += new_rows
            ratios.update(new_ratios)
            logger.info("%s done in %.0f s: %s", title, time.perf_counter() - step_start, _short(new_ratios))
        trained = [r.images_per_s for r in rows if r.section in ("train loop", "precision/layout")]
        new_rows, new_ratios = inference.pipeline(ctx, args.image_size, max(trained))
        rows += new_rows
        ratios.update(new_ratios)
    results: dict[str, Any] = {key: ratios[key] for key in TARGETS}
    results["targets"] = {
        key: {"target": target, "kind": kind, "met": _met(ratios[key], target, kind)}
        for key, (target, kind) in TARGETS.items()
    }
    results["extra"] = {key: value for key, value in ratios.items() if key not in TARGETS}
    results["rows"] = [row.to_dict(peaks["fp32"]) for row in rows]
    results["meta"] = {
        **facts,
        "matmul_peak_gflops_fp32": peaks["fp32"],
        "matmul_peak_gflops_bf16": peaks["bf16"],
        "loadavg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "settings": asdict(args),
        "train_images": len(splits["train"]),
        "wall_s": time.perf_counter() - started,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(_clean(results), indent=2))
    logger.info("Benchmark results written to %s", args.output)
    return results


def _met(value: float, target: float, kind: str) -> bool:
    return bool(value >= target if kind == "min" else value <= target)


def _short(ratios: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.3g}" for key, value in ratios.items())


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become strings ("inf"), unknown objects their str()."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def format_report(results: dict[str, Any]) -> str:
    """Markdown: the measured rows, then each ratio against its target, then the machine facts."""
    lines = [markdown_table(results["rows"]), "", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for key, target in results["targets"].items():
        sign = ">=" if target["kind"] == "min" else "<="
        lines.append(f"| {key} | {results[key]:.3f} | {sign} {target['target']} | {'yes' if target['met'] else 'NO'} |")
    meta, extra = results["meta"], results["extra"]
    isa = ", ".join(f"{flag}={'yes' if on else 'no'}" for flag, on in meta["isa_flags"].items())
    lines += [
        "",
        f"Extra: {_short(extra)}",
        f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, {meta['torch_threads']} torch threads, "
        f"torch {meta['torch']} ({meta['cpu_capability']}); {isa}; oneDNN bf16: {meta['mkldnn_bf16_supported']}.",
        f"Matmul peak: {meta['matmul_peak_gflops_fp32']:.1f} GFLOP/s fp32, {meta['matmul_peak_gflops_bf16']:.1f} bf16. "
        f"Load average (1 min) {meta['loadavg_1min']:.2f} at start, {meta['loadavg_1min_end']:.2f} at end; "
        f"wall time {meta['wall_s']:.0f} s.",
    ]
    return "\n".join(lines)
