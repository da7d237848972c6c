"""Multimodal encoders behind one contract (see :class:`Encoder`)."""
from .base import Encoder
from .calibrated import CalibratedEncoder
from .registry import list_encoders, load_encoder, register_encoder

__all__ = ["Encoder", "CalibratedEncoder", "list_encoders", "load_encoder", "register_encoder"]
