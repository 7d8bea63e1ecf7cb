"""ONNX graph pieces: the network alone, a preprocessing graph for one camera size, and the two joined.

Outputs are `cls` (B, C) and `dense` (B, C', h, w), float32 whatever the precision (fp16 casts sit
inside the graph), so callers never change. Graphs are ModelProtos in memory; onnx_file.py checks and
writes them, onnx_backend.py runs them. No Encoder here, and nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..config import DEFAULT_PRECISION, ONNX_PRECISIONS, check_choice
from ..info import StreamInfo
from ..models import use_fused_attention
from ..models.layers import PositionEmbedded
from .base import Preprocess

OPSET = 18
OUTPUT_NAMES = ("cls", "dense")
NET_INPUT = "input"


class FloatIO(nn.Module):
    """float32 in and out whatever the network's precision, so callers never change with fp16."""

    def __init__(self, net: nn.Module, half: bool) -> None:
        super().__init__()
        self.net, self.half = net, half

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, dense = self.net(x.half() if self.half else x)
        return cls.float(), dense.float()


def to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
            dynamic_batch: bool) -> Any:
    """Trace `module` with the TorchScript exporter (no onnxscript dependency) into a ModelProto."""
    import onnx

    axes = {name: {0: "batch"} for name in (input_name, *output_names)} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer chatter
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[input_name],
                          output_names=output_names, dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


@contextlib.contextmanager
def _fixed_pos_embed(net: nn.Module, info: StreamInfo) -> Iterator[None]:
    """ViTs resize their position embedding to the patch grid (models.layers.PositionEmbedded); at a fixed
    input size that is a constant, so it goes into the graph as one (computed by torch, hence exact).
    Tracing the interpolation itself fails: its scale factors become tensors."""
    if not isinstance(net, PositionEmbedded):
        yield
        return
    h, w = info.padded_size[0] // info.stride, info.padded_size[1] // info.stride
    with torch.no_grad():
        pos = net.position_embedding(h, w, next(net.parameters()).dtype)
    net.position_embedding = lambda *_: pos  # instance attribute shadows the method while tracing
    try:
        yield
    finally:
        del net.position_embedding


@contextlib.contextmanager
def _explicit_attention(net: nn.Module) -> Iterator[None]:
    """The explicit attention while tracing, whatever a torch backend chose for the live model: the graph
    then holds upstream's op order, and ONNX Runtime fuses it on its own."""
    flags = [(m, m.fused_attention) for m in net.modules() if hasattr(m, "fused_attention")]
    use_fused_attention(net, False)
    try:
        yield
    finally:
        for m, on in flags:
            m.fused_attention = on


@contextlib.contextmanager
def _centered_layer_norms(net: nn.Module) -> Iterator[None]:
    """LayerNorm traced as LayerNorm(x - mean(x)), which is the same function. ONNX Runtime before 1.2x
    (1.23, the newest for Python 3.10) computes the variance as E[x^2] - E[x]^2 on the CPU, which
    cancels where |mean| >> std: 4e-3 off in LingBot's first block (2e-6 on 1.32). Centred first, every
    version is exact; the extra mean costs one reduction per LayerNorm."""
    norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    for m in norms:
        dims = tuple(range(-len(m.normalized_shape), 0))
        m.forward = lambda x, m=m, dims=dims: nn.functional.layer_norm(  # instance attribute, while tracing
            x - x.mean(dims, keepdim=True), m.normalized_shape, m.weight, m.bias, m.eps)
    try:
        yield
    finally:
        for m in norms:
            del m.forward


def network_graph(net: nn.Module, info: StreamInfo, batch: int | None = None,
                  precision: str = DEFAULT_PRECISION, channels: int = 3) -> Any:
    """The network (on the CPU, fp32) alone: `input` (B, channels, *padded) -> `cls`, `dense`; batch None:
    dynamic. fp16 traces a half copy, so `net` keeps its fp32 weights. A network with an `exportable()`
    form (LingBot's padded attention) is traced in that form."""
    half = check_choice("ONNX export precision", precision, ONNX_PRECISIONS) == "fp16"
    if hasattr(net, "exportable"):
        net = net.exportable()
    if half:
        net = copy.deepcopy(net).half()
    example = torch.zeros(batch or 2, channels, *info.padded_size)
    with _fixed_pos_embed(net, info), _centered_layer_norms(net), _explicit_attention(net):
        # eval(): the exporter restores the wrapper's training flag afterwards, recursively into `net`
        return to_onnx(FloatIO(net, half).eval(), example, NET_INPUT, list(OUTPUT_NAMES), batch is None)


def preprocess_graph(prep: Preprocess, camera_size: tuple[int, int], batch: int | None = None) -> Any:
    """Raw input (B, *camera_size, ...) -> the `input` the network takes, for one camera size."""
    example = prep.example(batch or 2, camera_size)
    return to_onnx(prep.fixed(camera_size), example, prep.input_name, [NET_INPUT], batch is None)


def joined(pre: Any, net: Any) -> Any:
    """One graph: raw input -> preprocessing -> network."""
    import onnx.compose

    pre = onnx.compose.add_prefix(pre, "normalize/", rename_inputs=False)
    return onnx.compose.merge_models(pre, net, io_map=[(f"normalize/{NET_INPUT}", NET_INPUT)])
