"""The World-Action Model backbone: a diffusion transformer over context, future-frame and action tokens.

Notation: b batch, v camera views, c context frames, f future frames, s future-frame side (px),
g/p context/future token grid side, k action horizon, a action dim, d width, n tokens.

One sequence per sample, three groups of tokens:
    context  (clean): c*v*(g*g+1) image tokens from a conv stem, 1 state token (unless state_dim = 0),
                      1 instruction token
    video    (noisy): f*v*p*p patches of the future frames, each patch concatenated channel-wise with the
                      same patch of the current frame (image-to-video conditioning by concatenation)
    action   (noisy): k action tokens
Each token is modulated (adaLN) by the noise level of its own group, so future frames and actions can
sit at different noise levels (t = 1 is clean data, t = 0 pure noise; context tokens are always t = 1).
Context tokens attend only to context, so the context never depends on the noisy tokens (the basis of a
KV cache); future-frame and action tokens attend to everything.

`WAMTransformer.forward(noisy_video, noisy_actions, t_video, t_action, context)` is a pure tensor
function; `flow.py` turns it into a loss and a sampler. Any module with that signature (a diffusers
Wan or Cosmos adapter, later) can stand in its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from wam.config import ModelConfig

CONTEXT, VIDEO, ACTION = 0, 1, 2


class Backbone(Protocol):
    """What `flow.py`, training and the policy need from a network: this signature and a config.

    Our `WAMTransformer` is one; an adapter around diffusers' `WanTransformer3DModel` or
    `CosmosTransformer3DModel` (video latents in place of pixels, per-token timesteps) is another.
    """

    cfg: ModelConfig

    def __call__(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                 t_action: torch.Tensor, context: "Context") -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Context:
    """Clean conditioning for one batch."""

    images: torch.Tensor  # (b, c, v, 3, H, W) in [-1, 1]
    state: torch.Tensor  # (b, state_dim), normalised
    text: torch.Tensor  # (b, text_dim), sentence embedding


# ============================================================================ embeddings
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as in DiT). (b,) -> (b, dim)"""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, d: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ConvStem(nn.Module):
    """(B, 3, H, W) -> (B, g*g + 1, d): stride-2 convs to a g x g grid of tokens, plus one keypoint token.

    The keypoint token is a spatial softmax (Levine et al. 2016; robomimic, Diffusion Policy) over the
    feature map after the second conv: the expected (x, y) of `keypoints` learned features, a precise
    readout of where small things (a goal marker, a button) are.
    """

    def __init__(self, channels: tuple[int, ...], d: int, keypoints: int):
        super().__init__()
        self.layers = nn.ModuleList()
        cin = 3
        for cout in channels:
            self.layers.append(nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                                             nn.GroupNorm(min(8, cout), cout), nn.SiLU()))
            cin = cout
        self.proj = nn.Conv2d(cin, d, 1)
        self.kp_level = min(1, len(channels) - 1)
        self.kp_conv = nn.Conv2d(channels[self.kp_level], keypoints, 1) if keypoints else None
        self.kp_proj = nn.Linear(2 * keypoints, d) if keypoints else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kp = None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.kp_level and self.kp_conv is not None:
                kp = self.kp_proj(spatial_softmax(self.kp_conv(x)))[:, None]  # (B, 1, d)
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, g*g, d)
        return tokens if kp is None else torch.cat([tokens, kp], dim=1)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> (B, 2K): expected x and y in [-1, 1] of each channel's softmax over positions."""
    B, K, h, w = features.shape
    attn = features.flatten(2).softmax(-1).reshape(B, K, h, w)
    ys = torch.linspace(-1, 1, h, device=features.device)
    xs = torch.linspace(-1, 1, w, device=features.device)
    return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, s, s) -> (B, (s/p)^2, C*p*p)"""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(x: torch.Tensor, p: int, s: int) -> torch.Tensor:
    """(B, (s/p)^2, 3*p*p) -> (B, 3, s, s)"""
    B, g = x.shape[0], s // p
    x = x.reshape(B, g, g, 3, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, 3, s, s)


# ============================================================================ transformer block
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm attention + MLP with per-token adaLN-Zero modulation."""

    def __init__(self, d: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, segments: tuple[int, ...], mask: torch.Tensor) -> torch.Tensor:
        # cond: (b, 3, d) one conditioning vector per token group; segments: tokens in each group, in order
        mod = self.ada(cond)  # (b, 3, 6d)
        mod = torch.cat([mod[:, i:i + 1].expand(-1, n, -1) for i, n in enumerate(segments) if n], dim=1)  # (b, n, 6d)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        b, n, d = x.shape
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, heads, n, d/heads)
        x = x + gate1 * self.proj(h.transpose(1, 2).reshape(b, n, d))
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, d: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear = nn.Linear(d, out)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(cond)[:, None].chunk(2, dim=-1)  # (b, 1, d) each
        return self.linear(modulate(self.norm(x), shift, scale))


# ============================================================================ the model
class WAMTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.stem = ConvStem(cfg.stem_channels, d, cfg.keypoints)
        self.state_in = nn.Linear(cfg.state_dim, d) if cfg.state_dim else None
        self.text_in = nn.Linear(cfg.text_dim, d)
        self.video_in = nn.Linear(6 * cfg.future_patch**2, d)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.t_embed = TimestepEmbedder(d)
        self.text_cond = nn.Linear(cfg.text_dim, d)

        n_ctx = cfg.context_frames * cfg.views * cfg.context_tokens + 1 + (1 if cfg.state_dim else 0)
        n_vid = cfg.future_frames * cfg.views * cfg.future_grid**2
        n_act = cfg.action_horizon
        self.pos_context = nn.Parameter(torch.randn(1, n_ctx, d) * 0.02)
        self.pos_video = nn.Parameter(torch.randn(1, n_vid, d) * 0.02)
        self.pos_action = nn.Parameter(torch.randn(1, n_act, d) * 0.02)
        groups = torch.tensor([CONTEXT] * n_ctx + [VIDEO] * n_vid + [ACTION] * n_act)
        self.register_buffer("groups", groups, persistent=False)
        # allowed[i, j]: token i may attend to token j. Context sees only context.
        allowed = (groups[:, None] != CONTEXT) | (groups[None, :] == CONTEXT)
        self.register_buffer("mask", allowed, persistent=False)
        self.n_ctx, self.n_vid, self.n_act = n_ctx, n_vid, n_act

        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.video_out = FinalLayer(d, 3 * cfg.future_patch**2)
        self.action_out = FinalLayer(d, cfg.action_dim)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        for head in (self.video_out, self.action_out):
            nn.init.zeros_(head.ada[-1].weight)
            nn.init.zeros_(head.ada[-1].bias)
            nn.init.zeros_(head.linear.weight)
            nn.init.zeros_(head.linear.bias)

    def forward(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                t_action: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """noisy_video (b, f, v, 3, s, s), noisy_actions (b, k, a), t_video/t_action (b,) in [0, 1]
        -> raw outputs for future frames (b, f, v, 3, s, s) and actions (b, k, a)."""
        cfg = self.cfg
        b, c, v = context.images.shape[:3]
        f, s = noisy_video.shape[1], noisy_video.shape[-1]

        ctx = self.stem(context.images.flatten(0, 2))  # (b*c*v, g*g (+1), d)
        ctx = ctx.reshape(b, -1, cfg.width)  # (b, c*v*(g*g+1), d)
        extra = [self.text_in(context.text)[:, None]]  # (b, 1, d)
        if self.state_in is not None:
            extra.insert(0, self.state_in(context.state[:, : cfg.state_dim])[:, None])
        ctx = torch.cat([ctx, *extra], dim=1)
        current = F.avg_pool2d(context.images[:, -1].flatten(0, 1), cfg.image_size // s)  # (b*v, 3, s, s)
        current = current.reshape(b, 1, v, 3, s, s).expand(b, f, v, 3, s, s)
        vid = torch.cat([noisy_video, current], dim=3).flatten(0, 2)  # (b*f*v, 6, s, s)
        vid = self.video_in(patchify(vid, cfg.future_patch)).reshape(b, -1, cfg.width)  # (b, f*v*p*p, d)
        act = self.action_in(noisy_actions)  # (b, k, d)
        x = torch.cat([ctx + self.pos_context, vid + self.pos_video, act + self.pos_action], dim=1)  # (b, n, d)

        text = self.text_cond(context.text)  # (b, d)
        ones = torch.ones_like(t_video)
        cond = self.t_embed(torch.stack([ones, t_video, t_action], 1).flatten()).reshape(b, 3, -1) + text[:, None]
        for blk in self.blocks:
            x = blk(x, cond, (self.n_ctx, self.n_vid, self.n_act), self.mask)

        vid_out = self.video_out(x[:, self.n_ctx:self.n_ctx + self.n_vid], cond[:, VIDEO])
        vid_out = unpatchify(vid_out.reshape(b * f * v, -1, vid_out.shape[-1]), cfg.future_patch, s)
        act_out = self.action_out(x[:, self.n_ctx + self.n_vid:], cond[:, ACTION])
        return vid_out.reshape(b, f, v, 3, s, s), act_out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
