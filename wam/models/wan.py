"""A World-Action Model on diffusers' `WanTransformer3DModel` (Wan 2.1 / 2.2), without forking it.

The backbone's own modules are called in order (patch embedding, rotary table, time/text embedder, blocks,
output norm and projection); what a WAM needs is added around them:

    latent video  [context latent frames (clean) | future latent frames (noisy)]   views side by side in width
                  -> Wan's patch embedding and 3D rotary positions, as in pretraining
    state token   own linear embedding (clean)                    no rotation (identity rotary entries)
    action tokens own linear embedding + learned positions (noisy) no rotation
    timesteps     one per token, the Wan 2.2 TI2V way: 0 on clean tokens, (1 - t) * 1000 on noisy ones, so
                  frames and actions are noised separately (t = 1 is data here, Wan's sigma = 1 - t)
    outputs       Wan's output head on the future latent tokens (its velocity, noise - data, negated into
                  ours), an adaLN action head on the action tokens

Frames are normalised VAE latents (latent.FrameCodec), one frame per latent frame; training reads them
from a per-dataset cache (data/latents.py). The instruction is the text encoder's per-token embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from wam.config import ModelConfig
from wam.models.base import Context
from wam.models.transformer import FinalLayer
from wam.models.latent import LatentAdapter, from_folder


class WanWAM(LatentAdapter):
    def __init__(self, cfg: ModelConfig, transformer: nn.Module, codec=None, text_encoder=None):
        super().__init__(cfg, transformer, codec, text_encoder)  # the config's table row: frames as velocities
        cfg = self.cfg
        c = transformer.config
        d = c.num_attention_heads * c.attention_head_dim
        self.state_in = nn.Linear(cfg.state_dim, d) if cfg.state_dim else None
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.pos_action = nn.Parameter(torch.randn(1, cfg.action_horizon, d) * 0.02)
        self.action_out = FinalLayer(d, cfg.action_dim)
        nn.init.zeros_(self.action_out.ada[-1].weight)
        nn.init.zeros_(self.action_out.ada[-1].bias)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.backbone.blocks

    def video_shape(self, b: int) -> tuple[int, ...]:
        h = self.latent_size
        return (b, self.cfg.future_frames, self.cfg.views, self.backbone.config.in_channels, h, h)

    # ------------------------------------------------------------------ the pure tensor function
    def forward(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                t_action: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """noisy_video (b, f, v, z, h, w) latents, noisy_actions (b, k, a), t (b,) -> (video velocity, action output)."""
        cfg = self.cfg
        ctx = self.context_latents(context)
        lat = torch.cat([ctx.to(noisy_video.dtype), noisy_video], dim=1)  # (b, c+f, v, z, h, w)
        b, n_frames, v, z, h, w = lat.shape
        video = lat.permute(0, 3, 1, 4, 2, 5).reshape(b, z, n_frames, h, v * w)  # views side by side
        extra = [self.action_in(noisy_actions) + self.pos_action]
        if self.state_in is not None:
            state = self.state_in(context.state[:, : cfg.state_dim])  # (b, d)
            if context.state_known is not None:  # an absent state is a zero token
                state = state * context.state_known[:, None].to(state.dtype)
            extra.insert(0, state[:, None])
        extra = torch.cat(extra, dim=1)
        k, c, f = cfg.action_horizon, cfg.context_frames, cfg.future_frames
        per_frame = (h // self.patch[1]) * (v * w // self.patch[2])
        zero = t_video.new_zeros(b, 1)
        timestep = torch.cat([zero.expand(b, c * per_frame), ((1 - t_video) * 1000)[:, None].expand(b, f * per_frame),
                              zero.expand(b, extra.shape[1] - k), ((1 - t_action) * 1000)[:, None].expand(b, k)], dim=1)
        out, tokens, temb = self.denoise(video, extra, timestep, context.text)
        out = out[:, :, c:].reshape(b, z, f, h, v, w).permute(0, 2, 4, 1, 3, 5)  # (b, f, v, z, h, w)
        actions = self.action_out(tokens[:, -k:], temb[:, -1])
        return -out, actions  # Wan's velocity is noise - data; ours is data - noise

    def denoise(self, video: torch.Tensor, extra: torch.Tensor, timestep: torch.Tensor,
                text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Wan's transformer on a latent video (b, z, F, h, w) followed by `extra` tokens (b, m, d), one Wan
        timestep per token (b, F*h*w/4 + m). Returns Wan's output for the video (b, z, F, h, w), the extra
        tokens after the last block (b, m, d) and the per-token time embedding (b, n, d). With no extra tokens
        and one timestep for all, this is `WanTransformer3DModel.forward` (tested)."""
        bb = self.backbone
        b, z, n_frames, h, w = video.shape
        cos, sin = bb.rope(video)  # (1, n_video, 1, head_dim)
        x = bb.patch_embedding(video).flatten(2).transpose(1, 2)  # (b, n_video, d)
        n_video, m = x.shape[1], extra.shape[1]
        x = torch.cat([x, extra.to(x.dtype)], dim=1)
        rope = (torch.cat([cos, cos.new_ones(1, m, 1, cos.shape[-1])], 1),  # extra tokens: no rotation
                torch.cat([sin, sin.new_zeros(1, m, 1, sin.shape[-1])], 1))
        temb, proj, text, _ = bb.condition_embedder(timestep.flatten(), text.to(x.dtype), None,
                                                    timestep_seq_len=x.shape[1])
        proj = proj.unflatten(2, (6, -1))  # (b, n, 6, d)
        for block in self.blocks:
            x = self.run_block(block, x, text, proj, rope)
        shift, scale = (bb.scale_shift_table[None] + temb[:, :n_video, None]).chunk(2, dim=2)  # (b, n_video, 1, d)
        vid = (bb.norm_out(x[:, :n_video].float()) * (1 + scale[:, :, 0]) + shift[:, :, 0]).type_as(x)
        return self._unpatchify(bb.proj_out(vid), n_frames, h, w), x[:, n_video:], temb

    def _unpatchify(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        """(b, tokens, p_t*p_h*p_w*z) -> (b, z, frames, h, w), in the order of Wan's own output head."""
        pt, ph, pw = self.patch
        b = x.shape[0]
        x = x.reshape(b, frames // pt, h // ph, w // pw, pt, ph, pw, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, -1, frames, h, w)


def build(cfg: ModelConfig) -> WanWAM:
    """The "wan" row of backbones.BACKBONES: the adapter on the folder's transformer, VAE and text encoder."""
    return WanWAM(cfg, *from_folder(cfg))
