"""A World-Action Model with VLM semantics (recipe `hybrid-mot`): a video stream and a narrow action stream as a
mixture of transformers (LingBot-VA, Fast-WAM), both reading a VLM prefix (models/vla.py).

    prefix         the VLM over every camera image and the instruction; block j of both streams reads its layer
                   round((j + 1) L / depth) through a key/value projection, as the VLA's expert does
    video stream   width `width`: the robot state (clean, group "c") and the future-frame patches (noisy), each
                   concatenated channel-wise with the current frame (image-to-video conditioning, as transformer.py)
    action stream  width `action_width` (narrower): the action tokens (noisy)
    one block      each stream its own adaLN-zero modulation, norms, attention projections and MLP; one attention
                   over the tokens of both (queries, keys and values in the video stream's width), masked as the
                   recipe says: frames read the prefix, the state and the frames; actions read all of that and
                   themselves (recipes.py)
    training       frame and action noise levels independent, the frames' biased to pure noise (as `flash` and
                   `features`), so the actions learn to read the video stream at the noise it is sampled at

Frames never read the actions, so `encode` runs the VLM, the state and the frames once per chunk (per frame noise
level) and `decode` runs only the action stream against their cached keys/values at every denoising step: with one
frame step (the recipe's default) the video stream costs one pass per chunk. `forward` is the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from wam.config import ModelConfig
from wam.models.base import Context
from wam.models.transformer import ACTION, VIDEO, FinalLayer, TimestepEmbedder, modulate
from wam.models.vla import Prefix, PrefixReader


class Stream(nn.Module):
    """One stream's half of a block: its modulation, attention projections (to and from the shared attention width)
    and MLP."""

    def __init__(self, d: int, attn: int, cond: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * attn)
        self.proj = nn.Linear(attn, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond, 6 * d))

    def modulation(self, cond: torch.Tensor, counts: tuple[int, ...]) -> list[torch.Tensor]:
        """cond (b, 3, c), counts: this stream's tokens per group -> shift, scale, gate (x2), each (b, n, d)."""
        mod = self.ada(cond)
        mod = torch.cat([mod[:, i:i + 1].expand(-1, n, -1) for i, n in enumerate(counts) if n], dim=1)
        return list(mod.chunk(6, dim=-1))


class MoTBlock(nn.Module):
    def __init__(self, dv: int, da: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.video = Stream(dv, dv, dv, mlp_ratio)
        self.action = Stream(da, dv, dv, mlp_ratio)

    def forward(self, xv: torch.Tensor | None, xa: torch.Tensor | None, cond: torch.Tensor, segments: tuple[int, int, int],
                mask: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        """xv (b, n_c + n_v, dv) or None, xa (b, n_a, da) or None; segments (n_c, n_v, n_a); past: keys/values
        (b, heads, m, dv/heads) these read first. Returns xv, xa and the new tokens' (k, v)."""
        parts = []
        if xv is not None:
            parts.append((self.video, xv, self.video.modulation(cond, (segments[0], segments[1], 0))))
        if xa is not None:
            parts.append((self.action, xa, self.action.modulation(cond, (0, 0, segments[2]))))
        qkv = []
        for stream, x, (shift, scale, *_rest) in parts:
            qkv.append(stream.qkv(modulate(stream.norm1(x), shift, scale)))
        qkv = torch.cat(qkv, 1)
        b, n, _ = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        kv = (k, v)
        h = F.scaled_dot_product_attention(q, torch.cat([past[0], k], 2), torch.cat([past[1], v], 2), attn_mask=mask)
        h = h.transpose(1, 2).reshape(b, n, -1)
        out, i = [], 0
        for stream, x, (_s1, _c1, gate1, shift2, scale2, gate2) in parts:
            x = x + gate1 * stream.proj(h[:, i:i + x.shape[1]])
            out.append(x + gate2 * stream.mlp(modulate(stream.norm2(x), shift2, scale2)))
            i += x.shape[1]
        xv = out.pop(0) if xv is not None else None
        xa = out.pop(0) if xa is not None else None
        return xv, xa, kv


class MoT(PrefixReader):
    def __init__(self, cfg: ModelConfig, prefix: nn.Module | None = None):
        cfg = cfg.resolved()
        super().__init__(cfg, cfg.depth, cfg.width, cfg.heads, prefix)
        self.cfg = cfg
        dv, da = cfg.width, cfg.action_width
        self.state_in = nn.Linear(cfg.state_dim, dv) if cfg.state_dim else None
        self.n_ctx = 1 if cfg.state_dim else 0
        self.n_vid = self.n_patches = cfg.future_frames * cfg.views * cfg.future_grid**2
        self.n_act = cfg.action_horizon
        self.video_in = nn.Linear(6 * cfg.future_patch**2, dv)
        self.pos_video = nn.Parameter(torch.randn(1, self.n_vid, dv) * 0.02)
        self.video_out = FinalLayer(dv, 3 * cfg.future_patch**2)
        self.action_in = nn.Linear(cfg.action_dim, da)
        self.pos_action = nn.Parameter(torch.randn(1, self.n_act, da) * 0.02)
        self.action_out = FinalLayer(da, cfg.action_dim)
        self.action_cond = nn.Linear(dv, da)  # the action head's conditioning, in its own width
        self.t_embed = TimestepEmbedder(dv)
        self.blocks = nn.ModuleList([MoTBlock(dv, da, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self._layout(cfg)
        self._init_weights([s for blk in self.blocks for s in (blk.video, blk.action)], [self.video_out, self.action_out])

    # ------------------------------------------------------------------ tokens
    def _stream_tokens(self, context: Context, noisy_video: torch.Tensor | None, current: torch.Tensor) -> torch.Tensor | None:
        """The video stream's tokens: the state, then the frame patches (when given)."""
        parts = self._state(context) + ([self._video_tokens(noisy_video, current)] if noisy_video is not None else [])
        return torch.cat(parts, 1) if parts else None

    def _run(self, xv, xa, cond, segments, rows: range, past: list, keys: torch.Tensor, past_rows: range,
             keep: bool = False):
        mask = self._masked(rows, past_rows, keys)
        kvs = []
        for blk, kv in zip(self.blocks, past):
            if self._checkpointing and self.training:
                xv, xa, own = checkpoint(blk, xv, xa, cond, segments, mask, kv, use_reentrant=False)
            else:
                xv, xa, own = blk(xv, xa, cond, segments, mask, kv)
            if keep:  # encode: the prefix's keys and values with these tokens', for decode to read
                kvs.append((torch.cat([kv[0], own[0]], 2), torch.cat([kv[1], own[1]], 2)))
        return xv, xa, kvs

    def _actions(self, xa: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.action_out(xa, self.action_cond(cond[:, ACTION]))

    # ------------------------------------------------------------------ the pure tensor function
    def forward(self, noisy_video, noisy_actions, t_video, t_action, context: Context):
        cond = self._cond(t_video, t_action)
        past, keys = self.prefix_kv(context)
        current = context.current(self.cfg.future_size)
        xv = self._stream_tokens(context, noisy_video, current)
        xa = self.action_in(noisy_actions) + self.pos_action
        n = self.n_ctx + self.n_vid + self.n_act
        xv, xa, _ = self._run(xv, xa, cond, (self.n_ctx, self.n_vid, self.n_act), range(n), past, keys, range(0))
        return self._video_out(xv[:, self.n_ctx:], cond, current), self._actions(xa, cond)

    # ------------------------------------------------------------------ cached inference (the same function)
    def encode(self, context: Context, noisy_video: torch.Tensor | None = None,
               t_video: torch.Tensor | None = None) -> Prefix:
        """The VLM, the state and (when given) the frames at noise level t_video, once."""
        past, keys = self.prefix_kv(context)
        b = keys.shape[0]
        current = context.current(self.cfg.future_size)
        t_v = t_video if noisy_video is not None else keys.new_ones(b, dtype=torch.float32)
        cond = self._cond(t_v, keys.new_zeros(b, dtype=torch.float32))
        xv = self._stream_tokens(context, noisy_video, current)
        if xv is None:
            return Prefix(kv=past, keys=keys, n=0, current=current, video_out=None)
        n_v = self.n_vid if noisy_video is not None else 0
        xv, _, kv = self._run(xv, None, cond, (self.n_ctx, n_v, 0), range(xv.shape[1]), past, keys, range(0), keep=True)
        video_out = self._video_out(xv[:, self.n_ctx:], cond, current) if n_v else None
        own = torch.ones(b, xv.shape[1], dtype=torch.bool, device=keys.device)
        return Prefix(kv=kv, keys=torch.cat([keys, own], 1), n=xv.shape[1], current=current, video_out=video_out)

    def decode(self, prefix: Prefix, noisy_video, noisy_actions, t_video, t_action):
        """The rest of `forward` after `encode`: the action stream, and the frames unless they are in the prefix.
        Frames left out (noisy_video None, prefix without them) need actions that never read them."""
        cond = self._cond(t_video, t_action)
        video_here = prefix.n == self.n_ctx and noisy_video is not None
        if prefix.n == self.n_ctx and noisy_video is None and not self.capabilities.frames_optional:
            raise ValueError("this model's action tokens read the frame tokens: pass noisy_video or cache the frames")
        xv = self._video_tokens(noisy_video, prefix.current) if video_here else None
        xa = self.action_in(noisy_actions) + self.pos_action
        n = self.n_ctx + self.n_vid + self.n_act
        rows = range(prefix.n, n) if video_here or prefix.n > self.n_ctx else range(n - self.n_act, n)
        m = prefix.keys.shape[1] - prefix.n
        xv, xa, _ = self._run(xv, xa, cond, (0, self.n_vid if video_here else 0, self.n_act), rows, prefix.kv,
                              prefix.keys[:, :m], range(prefix.n))
        vid = self._video_out(xv, cond, prefix.current) if video_here else prefix.video_out
        return vid, self._actions(xa, cond)
