"""BASELINE (for benchmarks only): the node a user would write instead of defm_ros.

Upstream `defm` (preprocess_depth_image + the model) in a plain rclpy callback with a default
(reliable, depth 10) subscription. The one change from a typical hand-written node: outputs are
published as stamped Images, so that latency can be measured per frame.

    python bench/baseline_node.py --model defm_resnet18 --topic /bench/depth [--depth 10] [--size 224]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings

import numpy as np
import rclpy
import torch
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from defm.model_factory import get_defm_config
    from defm.models import vision_transformer as vits
    from defm.models.efficientnet_bifpn import EfficientNetBiFPN
    from defm.models.regnet_bifpn import RegNetBiFPN
    from defm.models.resnet_bifpn import ResNetBiFPN
    from defm.utils import preprocess_depth_image


def upstream_model(name: str) -> torch.nn.Module:
    """As defm.model_factory.create_defm_model builds it (random weights, no ImageNet download)."""
    cfg = get_defm_config(name)
    if "vit" in cfg.arch:
        return vits.__dict__[cfg.arch](
            img_size=cfg.global_crops_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
            init_values=cfg.layerscale, ffn_layer=cfg.ffn_layer, block_chunks=cfg.block_chunks,
            qkv_bias=cfg.qkv_bias, proj_bias=cfg.proj_bias, ffn_bias=cfg.ffn_bias,
            num_register_tokens=cfg.num_register_tokens, interpolate_offset=cfg.interpolate_offset,
            interpolate_antialias=cfg.interpolate_antialias).eval()
    cls = ResNetBiFPN if "resnet" in cfg.arch else RegNetBiFPN if "regnet" in cfg.arch else EfficientNetBiFPN
    with contextlib.redirect_stdout(io.StringIO()):
        return cls(backbone_name=cfg.arch, out_channels=cfg.out_channels, pretrained=False).eval()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="defm_resnet18")
    ap.add_argument("--topic", default="/bench/depth")
    ap.add_argument("--out", default="/baseline/features/dense")
    ap.add_argument("--depth", type=int, default=10, help="subscription queue depth (10: rclpy default)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = upstream_model(args.model).to(args.device)
    is_vit = "vit" in args.model
    rclpy.init()
    node = rclpy.create_node("baseline_defm_node")
    pub = node.create_publisher(Image, args.out, 10)

    def callback(msg: Image) -> None:
        depth = np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.width).astype(np.float32) / 1000.0
        x = preprocess_depth_image(depth, target_size=args.size, patch_size=14 if is_vit else None).to(args.device)
        with torch.no_grad():
            if is_vit:
                ((dense, _cls),) = model.get_intermediate_layers(x, n=1, reshape=True, return_class_token=True)
            else:
                dense = model(x)["dense_bifpn"]["P4"]
        hwc = dense[0].permute(1, 2, 0).contiguous().cpu().numpy()
        pub.publish(Image(header=msg.header, height=hwc.shape[0], width=hwc.shape[1],
                          encoding=f"32FC{hwc.shape[2]}", step=hwc.shape[1] * hwc.shape[2] * 4, data=hwc.tobytes()))

    node.create_subscription(Image, args.topic, callback, args.depth)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
