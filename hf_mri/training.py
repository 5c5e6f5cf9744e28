"""train(): fine-tune the MRI VGG16 with the HF Trainer and leave a complete, publishable model folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, set_seed

from .arguments import DataArguments, ModelArguments, MriTrainingArguments
from .augment import AugmentationConfig, build_augmentation
from .data import load_splits, save_report, with_transforms
from .image_processing_mri_vgg import MriVggImageProcessor
from .metrics import choose_threshold_for_sensitivity, make_compute_metrics
from .modeling_mri_vgg import MriVggForImageClassification, WeightsError
from .reporting import write_evaluation_report, write_results_json

__all__ = ["build_model", "check_launch", "check_output_dir", "checkpoint_problem", "resolve_resume", "train"]

logger = logging.getLogger(__name__)


def check_launch(args: MriTrainingArguments) -> None:
    """Refuse a launch that started several processes which do not form one distributed run."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        raise RuntimeError(
            f"{launched} processes were launched but each sees a world size of 1, so they would train "
            f"{launched} unrelated models. On a CPU-only machine run "
            "`accelerate launch --multi_gpu --num_processes N scripts/train.py --use_cpu ...` "
            "(or `torchrun --nproc_per_node N scripts/train.py --use_cpu ...`); on GPUs check that CUDA is visible."
        )


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete checkpoint, or None. The Trainer writes in place (no temporary folder and
    rename) with `trainer_state.json` last, so a run killed while saving leaves a folder without it."""
    folder = Path(folder)
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json (interrupted while saving?)"
    except (OSError, ValueError) as err:
        return f"unreadable trainer_state.json ({err})"
    weights = sorted(folder.glob("model*.safetensors"))
    if not weights:
        return "no model.safetensors"
    from safetensors import safe_open

    for path in weights:
        try:
            with safe_open(str(path), framework="pt"):  # checks the header and that the file is not truncated
                pass
        except Exception as err:  # noqa: BLE001 - any failure means this checkpoint cannot be resumed from
            return f"{path.name} is truncated or corrupt ({err})"
    return None


def resolve_resume(args: MriTrainingArguments) -> str | None:
    """Turn `--resume_from_checkpoint` (a folder, or `last`) into a complete checkpoint folder, or None.
    `last` skips, with a warning, newer checkpoints left incomplete by a crash."""
    resume = args.resume_from_checkpoint
    if not resume:
        return None
    if str(resume).lower() not in ("true", "last", "latest"):
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint: {resume} is not a checkpoint folder")
        problem = checkpoint_problem(resume)
        if problem:
            raise FileNotFoundError(f"--resume_from_checkpoint: {resume} is incomplete: {problem}")
        return str(resume)
    out = Path(args.output_dir)
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    skipped = []
    for folder in sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            for name, why in skipped:
                logger.warning("Not resuming from %s: %s; using %s instead", name, why, folder.name)
            return str(folder)
        skipped.append((folder.name, problem))
    detail = f" ({'; '.join(f'{name}: {why}' for name, why in skipped)})" if skipped else ""
    raise FileNotFoundError(
        f"--resume_from_checkpoint last: no complete checkpoint-* folder in {out}{detail}. "
        "Start a new run without --resume_from_checkpoint, or pass a checkpoint folder."
    )


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool, resuming: bool) -> None:
    """Before any training: refuse to overwrite a non-empty folder by accident, and check it is writable."""
    out = Path(output_dir)
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resuming):
        raise FileExistsError(
            f"output_dir {out} exists and is not empty; nothing was overwritten. Pass --overwrite_output_dir to "
            "write into it, --resume_from_checkpoint last to continue, or choose another --output_dir."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir {out} is not writable ({err}); choose another --output_dir") from err


def build_model(model_args: ModelArguments, pos_weight: float | None = None) -> MriVggForImageClassification:
    """Build the model from the arguments, resolving `--weights auto|imagenet|random|PATH`."""
    overrides = {**model_args.config_overrides(), "pos_weight": pos_weight}
    weights = model_args.weights
    if weights == "random":
        return MriVggForImageClassification.from_vgg16(None, **overrides)
    if weights != "auto":
        return MriVggForImageClassification.from_vgg16(weights, **overrides)
    try:
        return MriVggForImageClassification.from_vgg16("imagenet", **overrides)
    except WeightsError as err:
        logger.warning(
            "\n%s\n!! --weights auto: ImageNet weights unavailable, TRAINING FROM RANDOM INITIALISATION.\n!! %s\n%s",
            "!" * 100,
            str(err).replace("\n", "\n!! "),
            "!" * 100,
        )
        model = MriVggForImageClassification.from_vgg16(None, **overrides)
        model.config.weights_source = "random (ImageNet unavailable)"
        return model


def _probabilities(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    output = trainer.predict(dataset, metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    probabilities = torch.sigmoid(torch.as_tensor(np.asarray(logits, dtype=np.float32)).reshape(-1)).numpy()
    return probabilities, np.asarray(output.label_ids).reshape(-1).astype(int)


def _hyperparameters(model_args: ModelArguments, data_args: DataArguments, args: MriTrainingArguments) -> dict:
    keys = (
        "learning_rate optim lr_scheduler_type warmup_steps weight_decay num_train_epochs max_steps "
        "per_device_train_batch_size gradient_accumulation_steps seed bf16 fp16"
    ).split()
    return {
        **dataclasses.asdict(model_args),
        **dataclasses.asdict(data_args),
        **{key: getattr(args, key) for key in keys},
        "world_size": args.world_size,
        "total_train_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
    }


def train(model_args: ModelArguments, data_args: DataArguments, args: MriTrainingArguments) -> dict[str, Any]:
    """Split the data, fine-tune, pick the threshold, test once and write the model folder; return all metrics."""
    started = time.time()
    check_launch(args)
    resume = resolve_resume(args)
    if args.process_index == 0:
        check_output_dir(args.output_dir, data_args.overwrite_output_dir, resuming=resume is not None)
    push_to_hub, args.push_to_hub = args.push_to_hub, False  # we push once, at the end, through hf_mri.hub
    set_seed(args.seed)
    out = Path(args.output_dir)

    model = build_model(model_args)  # before the data: unavailable weights (--weights imagenet offline) fail fast
    with args.main_process_first(desc="loading and checking images"):
        splits, report = load_splits(
            data_args.data_dir,
            negative_classes=data_args.negative_class_names(),
            val_fraction=data_args.val_fraction,
            test_fraction=data_args.test_fraction,
            seed=args.seed,
            dedupe=data_args.dedupe,
        )
    counts = np.bincount(np.asarray(splits["train"]["label"]), minlength=2)
    model.config.pos_weight = float(counts[0] / counts[1]) if model_args.class_weighting and counts[1] else None
    if model_args.channels_last:  # conv activations follow the weights' memory format
        model = model.to(memory_format=torch.channels_last)
    processor = MriVggImageProcessor(image_size=model.config.image_size, **data_args.processor_kwargs())
    train_model = model
    if model_args.cache_features:
        from .feature_cache import prepare_cached_features

        train_model, datasets = prepare_cached_features(
            model.to(args.device), splits, processor, args.per_device_eval_batch_size, args.dataloader_num_workers
        )
    else:
        preset = data_args.augment_preset if data_args.augment else "none"
        datasets = with_transforms(splits, processor, build_augmentation(AugmentationConfig.preset(preset)))

    callbacks = []
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = Trainer(
        model=train_model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        compute_metrics=make_compute_metrics(lambda: model.config.threshold),
        callbacks=callbacks,
    )
    logger.info(
        "Training on %d images, validating on %d, world size %d",
        len(splits["train"]),
        len(splits["validation"]),
        args.world_size,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    results: dict[str, Any] = dict(train_result.metrics)

    if model_args.target_sensitivity is not None:
        val_probs, val_labels = _probabilities(trainer, datasets["validation"])
        chosen = choose_threshold_for_sensitivity(val_probs, val_labels, model_args.target_sensitivity)
        model.config.threshold = float(min(max(chosen, 1e-6), 1 - 1e-6))
        logger.info(
            "Threshold %.4f reaches validation sensitivity >= %.3f",
            model.config.threshold,
            model_args.target_sensitivity,
        )
    results.update(trainer.evaluate())

    test_probs, test_labels = _probabilities(trainer, datasets["test"])
    results["world_size"] = args.world_size
    results["threshold"] = model.config.threshold
    if trainer.is_world_process_zero():
        results.update(
            write_evaluation_report(test_probs, test_labels, out, prefix="test", threshold=model.config.threshold)
        )
        model.save_pretrained(out)  # the full model; a cached-features wrapper shares its head
        processor.save_pretrained(out)
        save_report(report, splits, out)
        (out / "training_config.json").write_text(
            json.dumps(_hyperparameters(model_args, data_args, args), indent=2, default=str)
        )
        results["train_wall_time_s"] = round(time.time() - started, 1)
        write_results_json(results, out / "all_results.json")
        from .hub import push
        from .model_card import write_model_card

        write_model_card(out)
        if push_to_hub:
            push(out, args.hub_model_id or out.name, private=bool(args.hub_private_repo), token=args.hub_token)
        logger.info("Model folder ready: %s", out)
    trainer.accelerator.wait_for_everyone()
    return results
