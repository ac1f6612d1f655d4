"""The shared side of the latent-video adapters (Wan, Cosmos): the text encoder that turns instructions into the
per-token embeddings the transformer cross-attends to (computed once per instruction), the frame codec that
encodes frames to normalised VAE latents and decodes them back, `LatentAdapter`, the base of the adapters, and
`from_folder`, which loads the three from a backbone's diffusers folder.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from wam.models.base import Capabilities


class TextEncoder:
    """Instructions -> (n, tokens, d) embeddings as the pipelines make them: padded to `tokens`, with the
    positions after each instruction's end set to zero."""

    def __init__(self, tokenizer, encoder: torch.nn.Module, tokens: int):
        self.tokenizer, self.encoder, self.tokens = tokenizer, encoder.eval().requires_grad_(False), tokens

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding="max_length", max_length=self.tokens, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        mask = enc.attention_mask.to(device)
        out = self.encoder(input_ids=enc.input_ids.to(device), attention_mask=mask).last_hidden_state
        return (out * mask[..., None]).float().cpu()


def vae_downsampling(config) -> int:
    """Spatial compression of an AutoencoderKLWan: 2 per stage after the first, times its pixel patchify (the
    Wan 2.2 VAE folds 2x2 pixels into channels first: 16x in all; Wan 2.1's and Cosmos's: 8x)."""
    return 2 ** (len(config["dim_mult"]) - 1) * (config.get("patch_size") or 1)


class FrameCodec:
    """Frames <-> normalised latents of a Wan VAE, one frame at a time (each frame its own 1-frame clip, so a
    dataset's latents are computed once per frame and any window can be assembled from them)."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae.eval().requires_grad_(False)
        self.z = vae.config.z_dim
        self.down = vae_downsampling(vae.config)
        self.mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std, dtype=torch.float32).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] -> (n, z, H/down, W/down), normalised as the pipelines do (mean 0, std 1)."""
        device, dtype = self.vae.device, self.vae.dtype
        mu = self.vae.encode(images[:, :, None].to(device, dtype)).latent_dist.mean[:, :, 0].float().cpu()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, z, h, w) normalised latents -> (n, 3, down*h, down*w) in [-1, 1]."""
        x = latents.float().cpu() * self.std + self.mean
        out = self.vae.decode(x[:, :, None].to(self.vae.device, self.vae.dtype)).sample[:, :, 0]
        return out.float().cpu().clamp(-1, 1)


def from_folder(cfg) -> tuple[torch.nn.Module, FrameCodec, TextEncoder]:
    """The transformer, frame codec and text encoder of the diffusers folder `cfg.backbone_path`, checked against
    the config's image size."""
    from wam.models import folders

    comp = folders.load(cfg.backbone_path, cfg.backbone)
    codec = FrameCodec(comp.vae)
    patch = comp.transformer.config.patch_size[1]
    step = codec.down * patch
    if cfg.image_size % step:
        raise ValueError(f"{cfg.backbone_path}: its VAE makes frames {codec.down}x smaller and its transformer reads "
                         f"{patch}x{patch} patches: image_size must be a multiple of {step}, got {cfg.image_size}")
    return comp.transformer, codec, TextEncoder(comp.tokenizer, comp.text_encoder, cfg.text_tokens)


class LatentAdapter(torch.nn.Module):
    """What the Wan and Cosmos adapters share: the backbone, its frozen helpers (not part of the weights) and the
    frame and text side of the protocol. Frames are VAE latents (b, n, v, z, h, w); the first
    `cfg.future_frames` latent frames of a prediction are the future frames."""

    capabilities = Capabilities(latent_frames=True, pretrained=True)

    def __init__(self, cfg, transformer: torch.nn.Module, codec: FrameCodec | None, text_encoder: TextEncoder | None):
        super().__init__()
        self.cfg, self.backbone = cfg.resolved(), transformer
        self.codec, self.text_encoder = codec, text_encoder
        self.gradient_checkpointing = False
        self.latent_size = cfg.image_size // (codec.down if codec is not None else 8)  # h = w of a latent frame
        self.patch = tuple(transformer.config.patch_size)

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The backbone's repeated transformer blocks (the unit of gradient checkpointing, sharding, compiling)."""
        raise NotImplementedError

    def run_block(self, block: torch.nn.Module, *args) -> torch.Tensor:
        """One backbone block; with gradient checkpointing it is recomputed in the backward pass."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def context_latents(self, context) -> torch.Tensor:
        """The context's VAE latents: cached ones (training) or the frames encoded now."""
        return context.latents if context.latents is not None else self.encode_frames(context.images)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            raise RuntimeError("this model was built without its text encoder")
        return self.text_encoder(texts)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(b, n, v, 3, H, W) in [-1, 1] -> latents (b, n, v, z, h, w)."""
        if self.codec is None:
            raise RuntimeError("this model was built without its VAE")
        b, n, v = images.shape[:3]
        lat = self.codec.encode(images.flatten(0, 2).float().cpu()).to(images.device)
        return lat.reshape(b, n, v, *lat.shape[1:])

    def decode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Predicted latents (b, >= f, v, z, h, w) -> the future frames (b, f, v, 3, H, W) in [-1, 1]."""
        b, f, v, s = video.shape[0], self.cfg.future_frames, video.shape[2], self.cfg.image_size
        return self.codec.decode(video[:, :f].flatten(0, 2)).reshape(b, f, v, 3, s, s)
