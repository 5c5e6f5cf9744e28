"""The benchmark's inference comparisons (batch-1 latency, ONNX Runtime) and the data-pipeline throughput."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from .augment import build_augmentation, with_transforms
from .benchmark_cases import BenchContext
from .benchmark_utils import Row, count_flops, forever, interleave, peak_rss_mib, reset_peak_rss
from .image_processing_mri_vgg import MriVggImageProcessor
from .onnx_export import OnnxClassifier, export_onnx, max_logit_difference

__all__ = ["onnx_latency", "pipeline"]

CL = torch.channels_last


def onnx_latency(ctx: BenchContext, image_size: int) -> tuple[list[Row], dict[str, float]]:
    """Batch-1 latency: PyTorch eager (fp32 NCHW, channels_last, channels_last + bf16) and ONNX Runtime."""
    model = ctx.model(image_size).eval()
    start = time.perf_counter()
    path = export_onnx(model, ctx.workdir / "model.onnx")
    export_s = time.perf_counter() - start
    session = OnnxClassifier(path, num_threads=ctx.threads)
    paths = [p for part in ctx.splits.values() for p in part["path"]][:3]
    pixels = MriVggImageProcessor(image_size=image_size)(paths)["pixel_values"]
    diffs = {f"onnx_max_abs_diff_b{b}": max_logit_difference(model, session, pixels[:b]) for b in (1, 3)}
    fast = copy.deepcopy(model).to(memory_format=CL)
    one = pixels[:1]

    def timed(call: Callable[[], Any], autocast: bool = False) -> Callable[[], list[float]]:
        def run() -> list[float]:
            times = []
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                for _ in range(ctx.latency_iters):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
            return times

        return run

    runners = {
        "PyTorch eager fp32 (NCHW)": timed(lambda: model(one)),
        "PyTorch eager fp32 channels_last": timed(lambda: fast(one)),
        "PyTorch eager bf16 autocast channels_last": timed(lambda: fast(one), autocast=True),
        "ONNX Runtime fp32": timed(lambda: session(one)),
    }
    for run in runners.values():
        with contextlib.suppress(Exception):
            run()  # warm-up (oneDNN primitive caches, ORT arenas)
    times, peaks = interleave(runners, ctx.rounds)
    gflop = count_flops(lambda: model(one)) / 1e9
    rows = [Row("inference b1", name, image_size, 1, times[name], 1, gflop, peaks[name]) for name in runners]
    ratio = rows[3].median_s / rows[0].median_s
    diffs["onnx_vs_eager_latency_by_min"] = rows[3].min_s / rows[0].min_s
    return rows, {"onnx_vs_eager_latency": ratio, "onnx_export_s": export_s,
                  "channels_last_inference_speedup": rows[0].median_s / rows[1].median_s, **diffs}  # fmt: skip


def pipeline(ctx: BenchContext, image_size: int, train_images_per_s: float) -> tuple[list[Row], dict[str, float]]:
    """Images/s the real DataLoader (decode + augment + processor) delivers, against what training consumes."""
    processor = MriVggImageProcessor(image_size=image_size)
    train = with_transforms(ctx.splits, processor, build_augmentation())["train"]
    loader = DataLoader(train, ctx.batch_size, shuffle=True, num_workers=ctx.num_workers)
    batches = forever(loader)
    next(batches)  # warm-up: worker start, file cache
    reset_peak_rss()
    wanted = max(4 * ctx.batch_size, 2 * len(train), 32)
    seen, times = 0, []
    while seen < wanted:
        start = time.perf_counter()
        count = len(next(batches)["labels"])
        times.append((time.perf_counter() - start) * ctx.batch_size / count)  # per full-batch equivalent
        seen += count
    rss = peak_rss_mib()
    name = f"DataLoader, num_workers={ctx.num_workers}"
    row = Row("data pipeline", name, image_size, ctx.batch_size, times, ctx.batch_size, peak_rss_mib=rss)
    return [row], {
        "pipeline_vs_train_throughput": row.images_per_s / train_images_per_s,
        "pipeline_images_per_s": row.images_per_s,
        "train_images_per_s_fastest": train_images_per_s,
    }
