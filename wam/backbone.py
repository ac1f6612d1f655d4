"""Build the network a model config names: our transformer, or a pretrained diffusers backbone with its adapter.

Every network follows the same protocol (model.Backbone): `forward(noisy_video, noisy_actions, t_video,
t_action, context)`, `embed_text(texts)` and `video_shape(b)`; pretrained ones add `encode_frames` and
`decode_frames` (their frames are VAE latents).
"""

from __future__ import annotations

from torch import nn

from wam.config import ModelConfig


def build(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone == "wam":
        from wam.models.transformer import WAMTransformer

        return WAMTransformer(cfg)
    from wam.models import folders
    from wam.models.latent import FrameCodec, TextEncoder

    comp = folders.load(cfg.backbone_path, cfg.backbone)
    codec = FrameCodec(comp.vae)
    step = codec.down * comp.transformer.config.patch_size[1]
    if cfg.image_size % step:
        raise ValueError(f"{cfg.backbone_path}: its VAE makes frames {codec.down}x smaller and its transformer reads "
                         f"{comp.transformer.config.patch_size[1]}x{comp.transformer.config.patch_size[1]} patches: "
                         f"image_size must be a multiple of {step}, got {cfg.image_size}")
    text = TextEncoder(comp.tokenizer, comp.text_encoder, cfg.text_tokens)
    if cfg.backbone == "wan":
        from wam.models.wan import WanWAM

        return WanWAM(cfg, comp.transformer, codec, text)
    from wam.models.cosmos import CosmosWAM

    return CosmosWAM(cfg, comp.transformer, codec, text)
