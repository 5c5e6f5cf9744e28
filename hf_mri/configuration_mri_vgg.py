"""MriVggConfig: the single source of truth for the VGG16 brain-MRI classifier's architecture."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["MriVggConfig", "VGG16_LAYERS"]

VGG16_LAYERS: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]
HEADS = ("vgg", "compact")
ID2LABEL = {0: "no_tumor", 1: "tumor"}
# A class keeps one `_auto_class`, so `save_pretrained` alone would leave AutoModel out of `auto_map`.
AUTO_MAP = {
    "AutoConfig": "configuration_mri_vgg.MriVggConfig",
    "AutoModel": "modeling_mri_vgg.MriVggForImageClassification",
    "AutoModelForImageClassification": "modeling_mri_vgg.MriVggForImageClassification",
}


class MriVggConfig(PretrainedConfig):
    r"""Configuration of [`MriVggForImageClassification`].

    Args:
        image_size (`int`, *optional*, defaults to 224): input height and width (>= 32).
        num_channels (`int`, *optional*, defaults to 3): input channels.
        vgg_layers (`list[int | str]`, *optional*, defaults to VGG16's table): conv widths, `"M"` = max-pool;
            each `"M"` closes a block. Tests use a tiny table such as `[8, "M", 16, "M"]`.
        batch_norm (`bool`, *optional*, defaults to `False`): `True` builds vgg16_bn.
        head (`str`, *optional*, defaults to `"vgg"`): `"vgg"` keeps fc6/fc7 on a 7x7 pool and replaces fc8 by one
            neuron; `"compact"` is a global average pool, a small MLP and one neuron.
        hidden_size (`int`, *optional*, defaults to 4096): fc6/fc7 width of the `"vgg"` head.
        compact_hidden_size (`int`, *optional*, defaults to 256): MLP width of the `"compact"` head.
        dropout (`float`, *optional*, defaults to 0.5): dropout probability in the head.
        freeze_blocks (`int`, *optional*, defaults to 0): conv blocks frozen from the input side, 0..number of blocks.
        threshold (`float`, *optional*, defaults to 0.5): probability at or above which an image is called tumour.
        pos_weight (`float`, *optional*): weight of positive examples in the BCE loss (class imbalance).
        label_smoothing (`float`, *optional*, defaults to 0.0): targets become `y * (1 - s) + s / 2`.
        weights_source (`str`, *optional*, defaults to `"random"`): where the initial weights came from.
    """

    model_type = "mri_vgg"

    def __init__(
        self,
        image_size: int = 224,
        num_channels: int = 3,
        vgg_layers: list[int | str] | None = None,
        batch_norm: bool = False,
        head: str = "vgg",
        hidden_size: int = 4096,
        compact_hidden_size: int = 256,
        dropout: float = 0.5,
        freeze_blocks: int = 0,
        threshold: float = 0.5,
        pos_weight: float | None = None,
        label_smoothing: float = 0.0,
        weights_source: str = "random",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("id2label", dict(ID2LABEL))
        kwargs.setdefault("label2id", {name: idx for idx, name in ID2LABEL.items()})
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        self.image_size = image_size
        self.num_channels = num_channels
        self.vgg_layers = list(vgg_layers) if vgg_layers is not None else list(VGG16_LAYERS)
        self.batch_norm = batch_norm
        self.head = head
        self.hidden_size = hidden_size
        self.compact_hidden_size = compact_hidden_size
        self.dropout = dropout
        self.freeze_blocks = freeze_blocks
        self.threshold = threshold
        self.pos_weight = pos_weight
        self.label_smoothing = label_smoothing
        self.weights_source = weights_source
        super().__init__(**kwargs)
        self.check()

    @property
    def num_blocks(self) -> int:
        """Number of conv blocks (each closed by an `"M"` in `vgg_layers`)."""
        return sum(1 for item in self.vgg_layers if item == "M")

    def check(self) -> None:
        """Validate every field; messages name the field, the value and the fix."""
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"image_size must be an integer >= 32, got {self.image_size!r}")
        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {self.num_channels!r}")
        bad = [item for item in self.vgg_layers if item != "M" and not (isinstance(item, int) and item > 0)]
        if bad or not self.vgg_layers or self.vgg_layers[-1] != "M":
            raise ValueError(
                f"vgg_layers must list positive conv widths and 'M' pools and end with 'M', got {self.vgg_layers!r}"
            )
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.freeze_blocks, int) or not 0 <= self.freeze_blocks <= self.num_blocks:
            raise ValueError(f"freeze_blocks must be in [0, {self.num_blocks}], got {self.freeze_blocks!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.pos_weight is not None and not float(self.pos_weight) > 0:
            raise ValueError(f"pos_weight must be > 0 or None, got {self.pos_weight!r}")
        if not 0.0 <= float(self.label_smoothing) < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        for name in ("hidden_size", "compact_hidden_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
