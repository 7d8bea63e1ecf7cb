"""Inference backends behind one interface (base.Backend), and the ONNX files they run."""

from ..preprocess.base import Preprocess
from .base import Backend, BackendReport, DeviceUnavailableError

__all__ = ["Backend", "BackendReport", "DeviceUnavailableError", "Preprocess"]
