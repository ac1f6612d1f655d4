"""The World-Action Model backbone: a diffusion transformer over context, future-frame and action tokens.

Notation: b batch, v camera views, c context frames, f future frames, s future-frame side (px),
g/p context/future token grid side, k action horizon, a action dim, d width, n tokens.

One sequence per sample, three groups of tokens:
    context  (clean): c*v*(g*g+1) image tokens from a conv stem, 1 state token (unless state_dim = 0),
                      1 instruction token
    video    (noisy): f*v*p*p patches of the future frames, each patch concatenated channel-wise with the
                      same patch of the current frame (image-to-video conditioning by concatenation); with
                      `motion_keypoints`, f*v more: keypoints of each future frame and their motion since now
    action   (noisy): k action tokens
Each token is modulated (adaLN) by the noise level of its own group, so future frames and actions can
sit at different noise levels (t = 1 is clean data, t = 0 pure noise; context tokens are always t = 1).
Who attends to whom is the recipe's (recipes.py): context tokens read only the context in every recipe;
in `video-then-idm`, `features` and `plan-then-act` the frame tokens never read the actions; in `action-only` there are
no frame tokens at all.

`WAMTransformer.forward(noisy_video, noisy_actions, t_video, t_action, context)` is a pure tensor
function; `flow.py` turns it into a loss and a sampler. `encode` + `decode` compute the same function in
two parts for inference: the tokens that never read later ones (the context; also the frames where the
recipe allows) once, then the rest against their cached keys/values at every denoising step. What the
recipe's mask allows is declared in `capabilities` (models/base.py). `build(cfg)` is this backbone's entry in
the table of backbones (backbones.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wam.config import ModelConfig
from wam.models import efficientnet
from wam.models.base import Capabilities, Context
from wam.recipes import attention_mask

CONTEXT, VIDEO, ACTION = 0, 1, 2


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


class PretrainedStem(nn.Module):
    """(B, 3, H, W) -> (B, g*g + 1, d) like ConvStem, from EfficientNet-Lite0's ImageNet features (models/efficientnet.py):
    its stride-16 map projected to tokens, the keypoint token from its stride-4 map. `load_pretrained()` reads the
    published weights (training does, before its first step; a checkpoint already holds them)."""

    def __init__(self, d: int, keypoints: int, path: str | None):
        super().__init__()
        self.path = path
        self.encoder = efficientnet.EfficientNetLiteEncoder()
        self.proj = nn.Conv2d(efficientnet.OUT_CHANNELS, d, 1)
        self.kp_conv = nn.Conv2d(efficientnet.KEYPOINT_CHANNELS, keypoints, 1) if keypoints else None
        self.kp_proj = nn.Linear(2 * keypoints, d) if keypoints else None

    def load_pretrained(self) -> Path:
        return efficientnet.load_pretrained(self.encoder, self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine, x = self.encoder(x)
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, g*g, d)
        if self.kp_conv is None:
            return tokens
        return torch.cat([tokens, self.kp_proj(spatial_softmax(self.kp_conv(fine)))[:, None]], dim=1)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> (B, 2K): expected x and y in [-1, 1] of each channel's softmax over positions."""
    B, K, h, w = features.shape
    attn = features.flatten(2).softmax(-1).reshape(B, K, h, w)
    ys = torch.linspace(-1, 1, h, device=features.device)
    xs = torch.linspace(-1, 1, w, device=features.device)
    return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=1)


class MotionKeypoints(nn.Module):
    """Where things are in each future frame and how far they moved since the current frame: (b, f*v, d), one token per
    future frame and camera. A small stride-1 conv at the future frames' own size, then a spatial softmax (as in
    ConvStem) gives K keypoints of each future frame and of the current frame (pooled to the same size); the token
    holds the future keypoints and their displacement. An 8 x 8 patch token sees a hand that moved two pixels only as
    a change of texture; a keypoint moves by those two pixels, which is what an inverse dynamics reads."""

    def __init__(self, keypoints: int, d: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
                                  nn.Conv2d(32, keypoints, 1))
        self.proj = nn.Linear(4 * keypoints, d)

    def forward(self, video: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """video (b, f, v, 3, s, s), current (b, v, 3, s, s) -> (b, f*v, d)"""
        b, f, v = video.shape[:3]
        now = spatial_softmax(self.conv(current.flatten(0, 1))).reshape(b, 1, v, -1)  # (b, 1, v, 2K)
        then = spatial_softmax(self.conv(video.flatten(0, 2))).reshape(b, f, v, -1)  # (b, f, v, 2K)
        return self.proj(torch.cat([then, then - now], dim=-1)).reshape(b, f * v, -1)


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

    def forward(self, x: torch.Tensor, cond: torch.Tensor, segments: tuple[int, ...], mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple]:
        """x (b, n, d): the tokens computed now, `segments[i]` of them in group i, in group order.
        cond (b, 3, d): one conditioning vector per group. past: cached keys/values (b, heads, m, d/heads) of
        m earlier tokens these may also read. mask (n, m + n). Returns x and this block's (k, v) for x."""
        mod = self.ada(cond)  # (b, 3, 6d)
        mod = torch.cat([mod[:, i:i + 1].expand(-1, n, -1) for i, n in enumerate(segments) if n], dim=1)  # (b, n, 6d)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        b, n, d = x.shape
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, heads, n, d/heads)
        x = x + gate1 * self.proj(h.transpose(1, 2).reshape(b, n, d))
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, kv


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
@dataclass
class Prefix:
    """Keys/values of the leading tokens that never read later ones, computed once and reused across
    denoising steps: the context, plus the future frames when the recipe's frame tokens never read actions."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block, (b, heads, n, d/heads)
    n: int  # tokens in the prefix
    text: torch.Tensor  # (b, d) instruction conditioning
    current: torch.Tensor  # (b, v, 3, s, s) current frame at the future frames' size
    video_out: torch.Tensor | None  # raw frame output when the frames are in the prefix


class WAMTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        d = cfg.width
        self.stem = (ConvStem(cfg.stem_channels, d, cfg.keypoints) if cfg.image_encoder == "conv"
                     else PretrainedStem(d, cfg.keypoints, cfg.image_encoder_path))
        self.state_in = nn.Linear(cfg.state_dim, d) if cfg.state_dim else None
        self.text_in = nn.Linear(cfg.text_dim, d)
        self.video_in = nn.Linear(6 * cfg.future_patch**2, d) if cfg.future_frames else None
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.t_embed = TimestepEmbedder(d)
        self.text_cond = nn.Linear(cfg.text_dim, d)

        n_ctx = cfg.context_frames * cfg.views * cfg.context_tokens + 1 + (1 if cfg.state_dim else 0)
        self.n_patches = cfg.future_frames * cfg.views * cfg.future_grid**2
        self.motion = MotionKeypoints(cfg.motion_keypoints, d) if cfg.motion_keypoints and cfg.future_frames else None
        n_vid = self.n_patches + (cfg.future_frames * cfg.views if self.motion is not None else 0)  # patches, then motion
        n_act = cfg.action_horizon
        self.pos_context = nn.Parameter(torch.randn(1, n_ctx, d) * 0.02)
        self.pos_video = nn.Parameter(torch.randn(1, n_vid, d) * 0.02) if n_vid else None
        self.pos_action = nn.Parameter(torch.randn(1, n_act, d) * 0.02)
        groups = torch.tensor([CONTEXT] * n_ctx + [VIDEO] * n_vid + [ACTION] * n_act)
        self.register_buffer("groups", groups, persistent=False)
        # mask[i, j]: token i may attend to token j, as the recipe says (context always reads only context).
        self.register_buffer("mask", attention_mask(cfg.recipe, groups, cfg.actions_see_frames), persistent=False)
        self.n_ctx, self.n_vid, self.n_act = n_ctx, n_vid, n_act
        self.residual = cfg.video_residual and cfg.video_target == "data"  # frames = current + change
        # What the mask allows: frames cached with the context when they never read actions (a prefix per
        # frame noise level); frames left out when the actions never read them (the fast path).
        self.capabilities = Capabilities(
            cached=True, frames_in_prefix=bool(n_vid) and not bool(self.mask[groups == VIDEO][:, groups == ACTION].any()),
            frames_optional=bool(n_vid) and not bool(self.mask[groups == ACTION][:, groups == VIDEO].any()))
        self._masks: dict[tuple, torch.Tensor | None] = {}

        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.graph_outputs = False
        """True when the blocks run as CUDA graphs (WAMPolicy with sampler.compile on a GPU): each block's outputs
        are copied out, since the cached keys/values outlive the next replay of the same graph."""
        self.video_out = FinalLayer(d, 3 * cfg.future_patch**2) if n_vid else None
        self.action_out = FinalLayer(d, cfg.action_dim)
        self.environment_out = (nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.environment_state_dim))
                                if cfg.environment_state_dim else None)  # a training-only auxiliary head
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
            if head is not None:
                nn.init.zeros_(head.ada[-1].weight)
                nn.init.zeros_(head.ada[-1].bias)
                nn.init.zeros_(head.linear.weight)
                nn.init.zeros_(head.linear.bias)

    # ------------------------------------------------------------------ the protocol beside forward
    def load_pretrained(self) -> Path | None:
        """Read the pretrained image encoder's weights, if the config names one (training does, before its first
        step); returns the file read."""
        return self.stem.load_pretrained() if isinstance(self.stem, PretrainedStem) else None

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Instructions -> (n, text_dim) sentence embeddings (computed once per instruction, not per step)."""
        from wam.text import embed

        return torch.from_numpy(embed(list(texts)))

    def video_shape(self, b: int) -> tuple[int, ...]:
        cfg = self.cfg
        return (b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)

    # ------------------------------------------------------------------ tokens
    def _context_tokens(self, context: Context) -> torch.Tensor:
        b = context.images.shape[0]
        ctx = self.stem(context.images.flatten(0, 2)).reshape(b, -1, self.cfg.width)  # (b, c*v*(g*g+1), d)
        extra = [self.text_in(context.text)[:, None]]  # (b, 1, d)
        if self.state_in is not None:
            state = self.state_in(context.state[:, : self.cfg.state_dim])  # (b, d)
            if context.state_known is not None:  # an absent state is a zero token (only its position embedding)
                state = state * context.state_known[:, None].to(state.dtype)
            extra.insert(0, state[:, None])
        return torch.cat([ctx, *extra], dim=1) + self.pos_context

    def _current(self, context: Context) -> torch.Tensor:
        """The current frame pooled to the future frames' size: (b, v, 3, s, s)."""
        return context.current(self.cfg.future_size)

    def _video_tokens(self, noisy_video: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Future-frame patches, each concatenated channel-wise with the same patch of the current frame."""
        b, f = noisy_video.shape[:2]
        vid = torch.cat([noisy_video, current[:, None].expand(-1, f, -1, -1, -1, -1)], dim=3).flatten(0, 2)
        vid = self.video_in(patchify(vid, self.cfg.future_patch)).reshape(b, -1, self.cfg.width)
        if self.motion is not None:
            vid = torch.cat([vid, self.motion(noisy_video, current)], dim=1)  # (b, f*v*p*p + f*v, d)
        return vid + self.pos_video

    def _cond(self, t_video: torch.Tensor, t_action: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(b, 3, d): noise-level embedding of each group (context is clean) plus the instruction."""
        ones = torch.ones_like(t_action)
        return self.t_embed(torch.stack([ones, t_video, t_action], 1).flatten()).reshape(len(text), 3, -1) + text[:, None]

    def _video_out(self, h: torch.Tensor, cond: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Frame tokens -> the raw frame output (b, f, v, 3, s, s); with `video_residual`, the current frame plus the
        network's change (so the untrained model copies the current frame)."""
        cfg, b = self.cfg, h.shape[0]
        out = self.video_out(h[:, :self.n_patches], cond[:, VIDEO])  # the motion tokens output no pixels
        out = unpatchify(out.reshape(b * cfg.future_frames * cfg.views, -1, out.shape[-1]), cfg.future_patch, cfg.future_size)
        out = out.reshape(b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)
        return out + current[:, None] if self.residual else out

    def _mask(self, rows: range, past: range) -> torch.Tensor | None:
        """The attention mask of tokens `rows` reading tokens `past` + `rows` (None: all allowed)."""
        key = (rows.start, rows.stop, past.start, past.stop, self.mask.device)
        if key not in self._masks:
            cols = torch.tensor(list(past) + list(rows), dtype=torch.long, device=self.mask.device)
            m = self.mask[rows.start:rows.stop][:, cols]
            self._masks[key] = None if bool(m.all()) else m
        return self._masks[key]

    def _run(self, x: torch.Tensor, cond: torch.Tensor, segments: tuple[int, int, int], rows: range,
             past: list | None = None, past_rows: range = range(0)) -> tuple[torch.Tensor, list]:
        """Run the sequence's tokens `rows` through the blocks, also reading the cached tokens `past_rows`."""
        mask = self._mask(rows, past_rows)
        kvs = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, cond, segments, mask, None if past is None else past[i])
            if self.graph_outputs:  # a CUDA graph's outputs live in buffers its next replay overwrites
                x, kv = x.clone(), (kv[0].clone(), kv[1].clone())
            kvs.append(kv)
        return x, kvs

    # ------------------------------------------------------------------ the pure tensor function
    def forward(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                t_action: torch.Tensor, context: Context, environment: bool = False) -> tuple[torch.Tensor | None, ...]:
        """noisy_video (b, f, v, 3, s, s), noisy_actions (b, k, a), t_video/t_action (b,) in [0, 1]
        -> raw outputs for future frames (b, f, v, 3, s, s; None if the recipe predicts none) and actions (b, k, a);
        with `environment`, also the auxiliary head's environment state (b, environment_state_dim), read from the
        context tokens' outputs, mean-pooled (training only: the context reads no frames or actions)."""
        text = self.text_cond(context.text)
        cond = self._cond(t_video, t_action, text)
        parts = [self._context_tokens(context)]
        current = self._current(context) if self.n_vid else None
        if self.n_vid:
            parts.append(self._video_tokens(noisy_video, current))
        parts.append(self.action_in(noisy_actions) + self.pos_action)
        n = self.n_ctx + self.n_vid + self.n_act
        x, _ = self._run(torch.cat(parts, dim=1), cond, (self.n_ctx, self.n_vid, self.n_act), range(n))
        vid_out = self._video_out(x[:, self.n_ctx:self.n_ctx + self.n_vid], cond, current) if self.n_vid else None
        act_out = self.action_out(x[:, self.n_ctx + self.n_vid:], cond[:, ACTION])
        if not environment:
            return vid_out, act_out
        if self.environment_out is None:
            raise ValueError("this model has no environment-state head (--model.environment-state-dim 0)")
        return vid_out, act_out, self.environment_out(x[:, :self.n_ctx].mean(1))

    # ------------------------------------------------------------------ cached inference (same function)
    def encode(self, context: Context, noisy_video: torch.Tensor | None = None,
               t_video: torch.Tensor | None = None) -> Prefix:
        """Compute the prefix once: the context, and the future frames at noise level t_video when given
        (only for recipes whose frame tokens never read actions)."""
        text = self.text_cond(context.text)
        current = self._current(context) if self.n_vid else None
        with_video = noisy_video is not None
        if with_video and not self.capabilities.frames_in_prefix:
            raise ValueError(f"recipe {self.cfg.recipe!r}: frame tokens read the actions, so they cannot be cached")
        b = len(text)
        t_v = t_video if with_video else text.new_ones(b)
        cond = self._cond(t_v, text.new_zeros(b), text)
        x = self._context_tokens(context)
        if with_video:
            x = torch.cat([x, self._video_tokens(noisy_video, current)], dim=1)
        x, kv = self._run(x, cond, (self.n_ctx, self.n_vid if with_video else 0, 0), range(x.shape[1]))
        video_out = self._video_out(x[:, self.n_ctx:], cond, current) if with_video else None
        return Prefix(kv=kv, n=x.shape[1], text=text, current=current, video_out=video_out)

    def decode(self, prefix: Prefix, noisy_video: torch.Tensor | None, noisy_actions: torch.Tensor,
               t_video: torch.Tensor, t_action: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The rest of `forward` after `encode`: frame tokens (unless in the prefix) and action tokens, reading
        the cached prefix. Equals `forward` on the same inputs (tested). With `noisy_video=None` and a model whose
        actions never read frames, the frame tokens are left out (the fast path; frames come back None)."""
        cond = self._cond(t_video, t_action, prefix.text)
        video_here = self.n_vid and prefix.n == self.n_ctx and noisy_video is not None
        if self.n_vid and prefix.n == self.n_ctx and noisy_video is None and not self.capabilities.frames_optional:
            raise ValueError("this model's action tokens read the frame tokens: pass noisy_video")
        parts = [self._video_tokens(noisy_video, prefix.current)] if video_here else []
        parts.append(self.action_in(noisy_actions) + self.pos_action)
        n = self.n_ctx + self.n_vid + self.n_act
        rows = range(prefix.n, n) if video_here or prefix.n > self.n_ctx else range(n - self.n_act, n)
        x, _ = self._run(torch.cat(parts, dim=1), cond, (0, self.n_vid if video_here else 0, self.n_act),
                         rows, prefix.kv, range(prefix.n))
        vid_out = self._video_out(x[:, :self.n_vid], cond, prefix.current) if video_here else prefix.video_out
        return vid_out, self.action_out(x[:, -self.n_act:], cond[:, ACTION])


def build(cfg: ModelConfig) -> WAMTransformer:
    """The "wam" row of backbones.BACKBONES."""
    return WAMTransformer(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
