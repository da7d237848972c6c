"""Multimodal encoders behind one contract (see :class:`Encoder`)."""
from .base import Encoder
from .calibrated import CalibratedEncoder
from .custom import ModuleEncoder, image_preprocess
from .lora import LoRALinear, add_lora, merge_lora
from .registry import list_encoders, load_encoder, register_encoder

__all__ = ["Encoder", "CalibratedEncoder", "ModuleEncoder", "image_preprocess", "list_encoders", "load_encoder",
           "register_encoder", "LoRALinear", "add_lora", "merge_lora"]
