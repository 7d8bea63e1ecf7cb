"""A LingBot-Depth config that runs in seconds on a CPU (the oracle README's): a dinov2_vits14 RGB-D encoder
whose dim_out equals the ViT width, neck and heads of [128, 64, 32, 32, 32] with conv_transpose resamplers."""

HEAD = {"dim_in": [128, 64, 32, 32, 32], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 4 + [1],
        "resamplers": ["conv_transpose"] * 4}
SMALL = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": 384,
                "img_depth_fuse_mode": "cat_token", "depth_emb_mode": "conv_1c"},
    "neck": {"dim_in": [386, 2, 2, 2, 2], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 5,
             "resamplers": ["conv_transpose"] * 4},
    "depth_head": HEAD,
    "mask_head": HEAD,
}
