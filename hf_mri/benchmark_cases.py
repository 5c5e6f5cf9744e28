"""The benchmark's training comparisons and shared context; each returns measured `Row`s and its ratio."""

from __future__ import annotations

import copy
import gc
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import (
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    get_scheduler,
)

from .augment import build_augmentation, with_transforms
from .benchmark_utils import Row, count_flops, forever, interleave, peak_rss_mib, reset_peak_rss
from .feature_cache import prepare_cached_features
from .image_processing_mri_vgg import MriVggImageProcessor
from .modeling_mri_vgg import MriVggForImageClassification

__all__ = ["BenchContext", "cached_features", "precision_layout", "scratch_dir", "trainer_vs_plain"]

logger = logging.getLogger(__name__)
CL = torch.channels_last


@dataclass
class BenchContext:
    """What every comparison shares: the data, the model recipe and the measurement settings."""

    splits: DatasetDict
    overrides: dict[str, Any]
    batch_size: int
    steps: int
    rounds: int
    epochs: int
    latency_iters: int
    threads: int
    num_workers: int
    seed: int
    workdir: Path
    attribution: bool = True
    _tensors: dict[int, list] = field(default_factory=dict)
    _args: TrainingArguments | None = None

    def model(self, image_size: int, **extra: Any) -> MriVggForImageClassification:
        torch.manual_seed(self.seed)
        return MriVggForImageClassification.from_vgg16(None, **{**self.overrides, "image_size": image_size, **extra})

    def train_items(self, image_size: int) -> list[dict[str, torch.Tensor]]:
        """Preprocessed (un-augmented) training images in memory, repeated to whole batches."""
        if image_size not in self._tensors:
            processor = MriVggImageProcessor(image_size=image_size)
            items = list(with_transforms(self.splits, processor)["train"])
            total = self.batch_size * max(1, math.ceil(len(items) / self.batch_size))
            self._tensors[image_size] = [items[i % len(items)] for i in range(total)]
        return self._tensors[image_size]

    @property
    def training_args(self) -> TrainingArguments:
        """One TrainingArguments for the whole run: building another resets Accelerate's state under a live Trainer."""
        if self._args is None:
            self._args = TrainingArguments(
                output_dir=str(self.workdir / "trainer"), per_device_train_batch_size=self.batch_size,
                max_steps=self.steps + 1, learning_rate=1e-4, use_cpu=True, report_to="none", save_strategy="no",
                eval_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                dataloader_pin_memory=False, remove_unused_columns=False, seed=self.seed,
            )  # fmt: skip
        return self._args

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer Trainer would build for `model` (fused AdamW by default), over its trainable parameters."""
        args = self.training_args
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        params = [p for p in model.parameters() if p.requires_grad]
        return cls([{"params": params, "weight_decay": args.weight_decay}], **kwargs)


def _train_step(model, optimizer, batch, autocast: bool = False, channels_last: bool = False) -> None:
    if channels_last:
        batch = {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=CL)}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)  # Trainer's default
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _plain_loop(ctx: BenchContext, model, items, **step_kwargs: Any) -> Callable[[], list[float]]:
    """A hand-written loop: same data, optimizer, LR schedule and clipping as Trainer. Returns a per-round runner."""
    optimizer = ctx.optimizer(model)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=10_000)
    loader = DataLoader(items, batch_size=ctx.batch_size, shuffle=True, collate_fn=default_data_collator)
    batches = forever(loader)

    def run() -> list[float]:
        model.train()
        times = []
        for _ in range(ctx.steps + 1):  # the first step of a round is a warm-up
            start = time.perf_counter()
            _train_step(model, optimizer, next(batches), **step_kwargs)
            scheduler.step()
            times.append(time.perf_counter() - start)
        return times[1:]

    return run


class _StepTimer(TrainerCallback):
    """Timestamps of Trainer's step ends: step k takes from the end of step k-1 (data loading included)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def _train_flops(model, image_size: int, **step_kwargs: Any) -> float:
    """GFLOP of one training image (forward + backward), counted on a batch of one."""
    pixels = torch.randn(1, model.config.num_channels, image_size, image_size)
    flops = count_flops(lambda: model(pixels, labels=torch.ones(1)).loss.backward())
    model.zero_grad(set_to_none=True)
    return flops / 1e9


def trainer_vs_plain(ctx: BenchContext, image_size: int) -> tuple[list[Row], dict[str, float]]:
    """HF Trainer against a minimal PyTorch loop: one model, optimizer recipe, batch and in-memory data."""
    model = ctx.model(image_size)
    items = ctx.train_items(image_size)
    gflop = _train_flops(model, image_size)
    timer = _StepTimer()
    trainer = Trainer(model=model, args=ctx.training_args, train_dataset=items, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # no metrics dict on stdout after every run

    def run_trainer() -> list[float]:
        trainer.train()
        return [b - a for a, b in zip(timer.stamps, timer.stamps[1:])][1:]

    times, peaks = interleave({"plain": _plain_loop(ctx, model, items), "trainer": run_trainer}, ctx.rounds)
    rows = [
        Row("train loop", "plain PyTorch loop, fp32", image_size, ctx.batch_size, times["plain"], ctx.batch_size,
            gflop, peaks["plain"]),
        Row("train loop", "HF Trainer, fp32", image_size, ctx.batch_size, times["trainer"], ctx.batch_size,
            gflop, peaks["trainer"]),
    ]  # fmt: skip
    return rows, {
        "trainer_vs_plain_loop": rows[1].images_per_s / rows[0].images_per_s,
        "trainer_vs_plain_loop_by_min": rows[0].min_s / rows[1].min_s,
    }


def precision_layout(ctx: BenchContext, image_size: int) -> tuple[list[Row], dict[str, float]]:
    """Full fine-tune step: fp32 eager (NCHW) against bf16 autocast + channels_last, and optionally each alone."""
    items = ctx.train_items(image_size)
    base = ctx.model(image_size)
    gflop = _train_flops(base, image_size)
    variants = {"fp32 eager (NCHW)": (False, False), "bf16 autocast + channels_last": (True, True)}
    pairs = [variants]
    if ctx.attribution:
        pairs.append({"fp32 + channels_last": (False, True), "bf16 autocast (NCHW)": (True, False)})
    rows = []
    for pair in pairs:  # two models at a time: each holds weights, gradients and Adam moments
        runners = {}
        for name, (autocast, channels_last) in pair.items():
            model = copy.deepcopy(base)
            if channels_last:
                model = model.to(memory_format=CL)
            runners[name] = _plain_loop(ctx, model, items, autocast=autocast, channels_last=channels_last)
        times, peaks = interleave(runners, ctx.rounds)
        for name in pair:
            rows.append(Row("precision/layout", name, image_size, ctx.batch_size, times[name], ctx.batch_size,
                            gflop, peaks[name]))  # fmt: skip
        del runners
        gc.collect()
    speedup = rows[1].images_per_s / rows[0].images_per_s
    extra = {"bf16_channels_last_train_speedup_by_min": rows[0].min_s / rows[1].min_s}
    if ctx.attribution:
        extra["channels_last_fp32_train_speedup"] = rows[0].median_s / rows[2].median_s
        extra["bf16_nchw_train_speedup"] = rows[0].median_s / rows[3].median_s
    return rows, {"bf16_channels_last_train_speedup": speedup, **extra}


def cached_features(ctx: BenchContext, image_size: int, **head: Any) -> tuple[list[Row], dict[str, float]]:
    """A head-training epoch on cached features against the same frozen-base epoch through the real pipeline.

    `head` overrides config fields (e.g. `head="compact"`); the ratio keys then end in `_<head>_head`.
    """
    blocks = ctx.model(image_size).config.num_blocks
    model = ctx.model(image_size, freeze_blocks=blocks, **head)
    label = f" [{head['head']} head]" if head else ""
    suffix = f"_{head['head']}_head" if head else ""
    processor = MriVggImageProcessor(image_size=image_size)
    train = with_transforms(ctx.splits, processor, build_augmentation())["train"]
    reset_peak_rss()
    start = time.perf_counter()
    wrapper, cached = prepare_cached_features(model, ctx.splits, processor, ctx.batch_size, ctx.num_workers)
    build_s, build_rss = time.perf_counter() - start, peak_rss_mib()
    n_cached = sum(len(part) for part in cached.values())
    loaders = {
        "uncached": (model, DataLoader(train, ctx.batch_size, shuffle=True, num_workers=ctx.num_workers)),
        "cached": (wrapper, DataLoader(cached["train"], ctx.batch_size, True, collate_fn=default_data_collator)),
    }

    def epoch_runner(net, loader) -> Callable[[], list[float]]:
        optimizer = ctx.optimizer(net)

        def run() -> list[float]:
            net.train()
            start = time.perf_counter()
            for batch in loader:
                _train_step(net, optimizer, batch)
            return [time.perf_counter() - start]

        return run

    runners = {name: epoch_runner(*pair) for name, pair in loaders.items()}
    for run in runners.values():
        run()  # warm-up epoch
    times, peaks = interleave(runners, ctx.epochs)
    n_train = len(cached["train"])
    pixels = torch.randn(1, model.config.num_channels, image_size, image_size)
    features = model.forward_features(pixels).detach()
    uncached_gflop = count_flops(lambda: model(pixels, labels=torch.ones(1)).loss.backward()) / 1e9
    cached_gflop = count_flops(lambda: wrapper(features, labels=torch.ones(1)).loss.backward()) / 1e9
    model.zero_grad(set_to_none=True)
    conv_gflop = count_flops(lambda: model.forward_features(pixels)) / 1e9
    rows = [
        Row("frozen base", f"epoch, no cache (decode+augment+conv+head){label}", image_size, ctx.batch_size,
            times["uncached"], n_train, uncached_gflop, peaks["uncached"]),
        Row("frozen base", f"epoch on cached features (head only){label}", image_size, ctx.batch_size, times["cached"],
            n_train, cached_gflop, peaks["cached"]),
        Row("frozen base", f"one-off feature extraction, all splits{label}", image_size, ctx.batch_size, [build_s],
            n_cached, conv_gflop, build_rss),
    ]  # fmt: skip
    speedup = rows[0].median_s / rows[1].median_s
    saved = rows[0].median_s - rows[1].median_s
    extra = {f"cached_features_epoch_speedup{suffix}": speedup, f"cache_build_s{suffix}": build_s,
             f"cache_break_even_epochs{suffix}": build_s / saved if saved > 0 else float("inf")}  # fmt: skip
    return rows, extra


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary working folder (ONNX file, Trainer output) removed afterwards."""
    return tempfile.TemporaryDirectory(prefix="hf_mri_bench_")
