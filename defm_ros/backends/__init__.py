"""Inference backends behind one interface (base.Backend), and the ONNX files they run."""

from .base import Backend, BackendReport, DeviceUnavailableError, Preprocess

__all__ = ["Backend", "BackendReport", "DeviceUnavailableError", "Preprocess"]
