"""MriVggForImageClassification: VGG16 with one sigmoid logit, plus checked import of VGG16 weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_mri_vgg import MriVggConfig

try:  # transformers >= 5: initialisers that respect already-loaded weights
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers
    init = nn.init

__all__ = ["MriVggForImageClassification", "MriVggPreTrainedModel", "WeightsError"]

logger = logging.getLogger(__name__)

IMAGENET_SOURCES = {
    False: ("timm/vgg16.tv_in1k", "VGG16_Weights"),
    True: ("timm/vgg16_bn.tv_in1k", "VGG16_BN_Weights"),
}
# fc8 (the 1000-way ImageNet layer) is replaced by our one neuron, so it is dropped on import.
DROPPED_KEYS = ("classifier.6.", "head.fc.")
TIMM_TO_TORCHVISION = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3."}


class WeightsError(RuntimeError):
    """Pretrained VGG16 weights could not be found, read or matched to the model."""


def build_features(config: MriVggConfig) -> tuple[nn.Sequential, list[int]]:
    """Build the conv stack from `config.vgg_layers` (torchvision's indices); return it and block end indices."""
    layers: list[nn.Module] = []
    block_ends: list[int] = []
    in_channels = config.num_channels
    for item in config.vgg_layers:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            block_ends.append(len(layers))
            continue
        layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1))
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(item)
    return nn.Sequential(*layers), block_ends


class MriVggPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the MRI VGG models."""

    config_class = MriVggConfig
    base_model_prefix = "mri_vgg"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, 0.0, 0.01)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)


class MriVggForImageClassification(MriVggPreTrainedModel):
    """VGG16 (optionally with batch norm) whose 1000-way output is replaced by one logit for P(tumour)."""

    def __init__(self, config: MriVggConfig) -> None:
        super().__init__(config)
        self.features, self.block_ends = build_features(config)
        last_width = [item for item in config.vgg_layers if item != "M"][-1]
        if config.head == "vgg":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(last_width * 49, config.hidden_size),
                nn.ReLU(inplace=True),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_size, config.hidden_size),
                nn.ReLU(inplace=True),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_size, 1),
            )
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(last_width, config.compact_hidden_size),
                nn.ReLU(inplace=True),
                nn.Dropout(config.dropout),
                nn.Linear(config.compact_hidden_size, 1),
            )
        self.post_init()
        self.freeze_blocks(config.freeze_blocks)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, then re-apply `config.freeze_blocks` (loading resets it)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_blocks(model.config.freeze_blocks)
        return loaded

    def block_modules(self, block: int) -> nn.Sequential:
        """The layers of conv block `block` (0-based), ending with its max-pool."""
        start = 0 if block == 0 else self.block_ends[block - 1]
        return self.features[start : self.block_ends[block]]

    def freeze_blocks(self, num_blocks: int) -> None:
        """Freeze the first `num_blocks` conv blocks (no gradients, batch norm kept in eval mode)."""
        if not 0 <= num_blocks <= len(self.block_ends):
            raise ValueError(f"freeze_blocks must be in [0, {len(self.block_ends)}], got {num_blocks}")
        self.config.freeze_blocks = num_blocks
        for block in range(len(self.block_ends)):
            for param in self.block_modules(block).parameters():
                param.requires_grad_(block >= num_blocks)
        self.train(self.training)

    def train(self, mode: bool = True) -> MriVggForImageClassification:
        super().train(mode)
        for block in range(getattr(self.config, "freeze_blocks", 0)):
            self.block_modules(block).eval()  # frozen batch-norm statistics stay fixed
        return self

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Conv features after the last max-pool, shape (B, C, H/2^blocks, W/2^blocks)."""
        return self.features(pixel_values)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, flatten and classify conv features; `pre_logits=True` returns the last hidden layer (fc7)."""
        pooled = torch.flatten(self.avgpool(features), 1)
        if pre_logits:
            return self.classifier[:-1](pooled)
        return self.classifier(pooled)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> ImageClassifierOutput:
        """Return `logits` of shape (B, 1); with float `labels` (0./1.), also the BCE-with-logits loss."""
        logits = self.forward_head(self.forward_features(pixel_values))
        loss = None
        if labels is not None:
            loss = self.loss_from_logits(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)

    def loss_from_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy on one logit, with the config's `pos_weight` and `label_smoothing`."""
        targets = labels.to(logits.dtype).reshape(logits.shape)
        if self.config.label_smoothing:
            targets = targets * (1.0 - self.config.label_smoothing) + 0.5 * self.config.label_smoothing
        pos_weight = None
        if self.config.pos_weight is not None:
            pos_weight = torch.tensor([float(self.config.pos_weight)], device=logits.device, dtype=logits.dtype)
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)

    def grad_cam(self, pixel_values: torch.Tensor, target: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAM on the last conv block's ReLU output for class `target` (1 = tumour, 0 = no tumour).

        Runs in eval mode (the training mode is restored after), never writes `.grad` nor changes
        `requires_grad`, works with frozen blocks. Returns `(heatmaps, logits)`: heatmaps (B, H, W) in [0, 1]
        at the input's size, and the logits (B, 1) of the same forward pass.
        """
        split = self.block_ends[-1] - 1  # index of the last max-pool: features[:split] ends at the last ReLU
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():  # also inside a caller's inference_mode
                with torch.no_grad():
                    activations = self.features[:split](pixel_values)
                activations = activations.detach().requires_grad_(True)
                logits = self.forward_head(self.features[split:](activations))
                score = logits[:, 0] if target == 1 else -logits[:, 0]
                (gradients,) = torch.autograd.grad(score.sum(), activations)
        finally:
            self.train(was_training)
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activations.detach()).sum(dim=1, keepdim=True))
        cam = nn.functional.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        peak = cam.amax(dim=(2, 3), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
        return cam[:, 0].clamp(0.0, 1.0), logits.detach()

    @classmethod
    def from_vgg16(
        cls,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] | None,
        config: MriVggConfig | None = None,
        **config_overrides: Any,
    ) -> MriVggForImageClassification:
        """Build the model and load VGG16 weights: `"imagenet"`, a `.pth`/`.safetensors` path
        (torchvision or timm layout), a state dict, or `None` for random initialisation."""
        config = MriVggConfig(**{**(config.to_dict() if config else {}), **config_overrides})
        if weights is None:
            config.weights_source = "random"
            return cls(config)
        state_dict, source = resolve_vgg16_weights(weights, config.batch_norm)
        config.weights_source = source
        model = cls(config)
        model.load_vgg16_state_dict(state_dict)
        return model

    def load_vgg16_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a torchvision- or timm-layout VGG16 state dict, checking every key and shape."""
        converted = to_torchvision_layout(state_dict)
        own = self.state_dict()
        wanted = [key for key in own if key.startswith("features.")]
        if self.config.head == "vgg":
            wanted += [key for key in own if key.startswith(("classifier.0.", "classifier.3."))]
        missing = [key for key in wanted if key not in converted]
        mismatched = [
            f"{key}: source {tuple(converted[key].shape)} vs model {tuple(own[key].shape)}"
            for key in wanted
            if key in converted and converted[key].shape != own[key].shape
        ]
        unexpected = [
            key for key in converted if key not in own or (key.startswith("classifier.") and key not in wanted)
        ]
        if self.config.head == "compact":
            unexpected = [key for key in unexpected if not key.startswith("classifier.")]
        if missing or mismatched or unexpected:
            raise WeightsError(
                "VGG16 weights do not match the model "
                f"(batch_norm={self.config.batch_norm}, vgg_layers={self.config.vgg_layers}): "
                f"missing {missing[:8]}, shape mismatches {mismatched[:8]}, unexpected {unexpected[:8]}. "
                "Use weights made for the same VGG variant (vgg16 vs vgg16_bn)."
            )
        with torch.no_grad():
            for key in wanted:
                own[key].copy_(converted[key])
        new = sorted({key.rsplit(".", 1)[0] for key in own if key not in wanted and not key.endswith("tracked")})
        logger.info("Loaded %d pretrained tensors; newly initialised: %s", len(wanted), ", ".join(new) or "none")


def to_torchvision_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a timm or torchvision VGG state dict to torchvision keys, dropping the 1000-way fc8."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(DROPPED_KEYS):
            continue
        for timm_prefix, tv_prefix in TIMM_TO_TORCHVISION.items():
            if key.startswith(timm_prefix):
                key = tv_prefix + key[len(timm_prefix) :]
                if key.endswith(".weight") and tensor.ndim == 4:  # timm's ConvMlp: conv 7x7 / 1x1 == linear
                    tensor = tensor.reshape(tensor.shape[0], -1)
        converted[key] = tensor
    return converted


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` or a pickle-free `.pth` state dict (never executes code from the file)."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"{path}: refused to load: not a plain tensor state dict readable with weights_only=True "
            f"(it may contain code or be corrupt). Convert it to .safetensors. ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(loaded).__name__}"
        )
    return dict(loaded)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to `host`:443, or to the HTTPS proxy set for it, opens within `timeout` seconds."""
    import socket
    import urllib.parse
    import urllib.request

    port = 443
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):  # the downloads go through the proxy: can we reach it?
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_vgg16_weights(
    weights: str | os.PathLike | Mapping[str, torch.Tensor], batch_norm: bool
) -> tuple[Mapping[str, torch.Tensor], str]:
    """Turn the `weights` argument of `from_vgg16` into a state dict and a description of its source."""
    if isinstance(weights, Mapping):
        return weights, "state_dict"
    if str(weights) != "imagenet":
        path = Path(weights).expanduser()
        return load_state_dict_file(path), f"file:{path.name}"
    hub_id, tv_name = IMAGENET_SOURCES[batch_norm]
    errors = []
    try:
        from huggingface_hub import hf_hub_download

        # Cache first; go online only when the Hub answers at all (its client retries for ~30 s otherwise).
        online = _reachable("huggingface.co")
        path = hf_hub_download(hub_id, "model.safetensors", local_files_only=not online)
        return load_state_dict_file(Path(path)), f"imagenet:{hub_id}"
    except Exception as err:  # noqa: BLE001 - fall back to torchvision, report both below
        errors.append(f"Hugging Face Hub {hub_id}: {type(err).__name__}: {err}")
    try:
        import torchvision.models as tvm

        tv_weights = getattr(tvm, tv_name).IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(tv_weights.url).name
        if not cached.is_file() and not _reachable("download.pytorch.org"):
            raise ConnectionError("download.pytorch.org is unreachable and the weights are not in the torch cache")
        return tv_weights.get_state_dict(progress=True), f"imagenet:torchvision.{tv_name}.IMAGENET1K_V1"
    except Exception as err:  # noqa: BLE001
        errors.append(f"torchvision {tv_name}.IMAGENET1K_V1: {type(err).__name__}: {err}")
    raise WeightsError(
        "ImageNet VGG16 weights could not be had from either source:\n  "
        + "\n  ".join(errors)
        + "\nConnect to the internet (or fill the Hugging Face / torch hub cache), or pass weights=PATH to a local "
        "torchvision .pth or timm .safetensors VGG16 state dict, or weights=None (CLI: --weights random)."
    )
