"""hf_mri: train, evaluate, publish and demo a VGG16 brain-MRI tumour classifier on the Hugging Face stack."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

from .configuration_mri_vgg import VGG16_LAYERS, MriVggConfig
from .image_processing_mri_vgg import MriImageError, MriVggImageProcessor, load_image
from .modeling_mri_vgg import MriVggForImageClassification, WeightsError

__version__ = "0.1.0"
__all__ = [
    "VGG16_LAYERS",
    "MriImageError",
    "MriVggConfig",
    "MriVggForImageClassification",
    "MriVggImageProcessor",
    "WeightsError",
    "load_image",
]

AutoConfig.register("mri_vgg", MriVggConfig, exist_ok=True)
AutoModel.register(MriVggConfig, MriVggForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(MriVggConfig, MriVggForImageClassification, exist_ok=True)
AutoImageProcessor.register(MriVggConfig, slow_image_processor_class=MriVggImageProcessor, exist_ok=True)

# save_pretrained copies the three Hub-portable files and writes `auto_map`.
MriVggConfig.register_for_auto_class()
MriVggForImageClassification.register_for_auto_class("AutoModelForImageClassification")
MriVggImageProcessor.register_for_auto_class("AutoImageProcessor")
