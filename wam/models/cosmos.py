"""The Cosmos Policy recipe on diffusers' `CosmosTransformer3DModel` (Cosmos-Predict2), backbone unchanged.

Everything the policy reads and writes is a latent frame of the pretrained video model (Kim et al., Cosmos
Policy): no new tokens, no new heads inside the network.

    conditioning (clean)   context image latents (views side by side) | current robot state
    denoised (one noise)   future image latents | action chunk | future robot state | value
A vector (state, action chunk, value) becomes a latent frame by repeating it until the frame is full; reading
one back averages the copies. Conditioning frames get Cosmos's conditioning time (sigma 1e-4) and a 1 in the
condition-mask channel, as in its Video2World pipeline; the others its rectified-flow time 1 - t (t = 1 is data
here). Its output (noise - data) is negated into our velocity.

The value is the discounted time to success, gamma ** (steps left in the demonstration), in [-1, 1]: with
successful demonstrations only it measures progress, not the chance of success (Cosmos Policy also trains it on
its own rollouts, failures included). `WAMPolicy` uses it for best-of-N: N chunks sampled from N noises in one
batch, the one with the highest predicted value executed (`SamplerConfig.best_of`).

`wam/models/base.py`'s interface holds: "video" here is (b, f + 2, v, z, h, w), the future latents followed by the
future-state and value frames; `pack_video(batch)` builds that training target.
"""

from __future__ import annotations

import torch
from torch import nn

from wam.config import ModelConfig
from wam.models.base import Capabilities, Context
from wam.models.latent import LatentAdapter, from_folder

SIGMA_CONDITIONING = 1e-4  # the Video2World pipeline's conditioning noise
GAMMA = 0.99


def to_frame(vec: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(b, n) -> (b, *shape): the vector repeated until the frame is full."""
    numel = int(torch.tensor(shape).prod())
    reps = -(-numel // vec.shape[1])
    return vec.repeat(1, reps)[:, :numel].reshape(vec.shape[0], *shape)


def from_frame(frame: torch.Tensor, n: int) -> torch.Tensor:
    """(b, *shape) -> (b, n): the mean of the vector's whole copies in the frame."""
    flat = frame.flatten(1)
    copies = flat.shape[1] // n
    return flat[:, :copies * n].reshape(-1, copies, n).mean(1)


class CosmosWAM(LatentAdapter):
    capabilities = Capabilities(latent_frames=True, pretrained=True, value=True, packed_video=True)

    def __init__(self, cfg: ModelConfig, transformer: nn.Module, codec=None, text_encoder=None):
        super().__init__(cfg, transformer, codec, text_encoder)  # the config's table row: velocities, cosmos-policy
        cfg = self.cfg
        c = transformer.config
        self.z = c.in_channels - 1  # the last input channel is the condition mask
        if cfg.state_dim == 0:
            raise ValueError("the cosmos-policy recipe writes the robot state into latent frames: state_dim must be > 0")
        h = self.latent_size
        if self.z * h * h * cfg.views < cfg.action_horizon * cfg.action_dim:
            raise ValueError("an action chunk must fit in one latent frame")

    # ------------------------------------------------------------------ the protocol
    @property
    def blocks(self) -> nn.ModuleList:
        return self.backbone.transformer_blocks

    def video_shape(self, b: int) -> tuple[int, ...]:
        h = self.latent_size
        return (b, self.cfg.future_frames + 2, self.cfg.views, self.z, h, h)

    def value_of(self, video: torch.Tensor) -> torch.Tensor:
        """The predicted value in [-1, 1] of each sample: (b,)."""
        return from_frame(video[:, -1], 1)[:, 0]

    def pack_video(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The training target of the "video" modality and its mask: future latents, future state, value."""
        frame = batch.video.shape[2:]
        state = to_frame(batch.future_state, frame)[:, None]
        value = to_frame(2 * GAMMA ** batch.steps_left.float()[:, None] - 1, frame)[:, None]
        video = torch.cat([batch.video, state, value], dim=1)
        last_ok = batch.video_mask[:, -1:]
        mask = torch.cat([batch.video_mask, last_ok, torch.ones_like(last_ok)], dim=1)
        return video, mask

    # ------------------------------------------------------------------ the pure tensor function
    def forward(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                t_action: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b, frame = noisy_video.shape[0], noisy_video.shape[2:]  # frame: (v, z, h, w)
        ctx = self.context_latents(context)
        f = cfg.future_frames
        state = to_frame(context.state[:, : cfg.state_dim], frame)[:, None]
        action = to_frame(noisy_actions.flatten(1), frame)[:, None]
        lat = torch.cat([ctx.to(noisy_video.dtype), state, noisy_video[:, :f], action, noisy_video[:, f:]], dim=1)
        n_cond = ctx.shape[1] + 1
        t_cond = SIGMA_CONDITIONING / (1 + SIGMA_CONDITIONING)
        times = [t_video.new_full((b, n_cond), t_cond), (1 - t_video)[:, None].expand(b, f),
                 (1 - t_action)[:, None], (1 - t_video)[:, None].expand(b, 2)]
        out = self.denoise(lat, torch.cat(times, dim=1), n_cond, context.text)  # (b, frames, v, z, h, w)
        out = -out[:, n_cond:]  # Cosmos's velocity is noise - data
        video = torch.cat([out[:, :f], out[:, f + 1:]], dim=1)
        actions = from_frame(out[:, f], cfg.action_horizon * cfg.action_dim).reshape(b, cfg.action_horizon, cfg.action_dim)
        return video, actions

    def denoise(self, lat: torch.Tensor, times: torch.Tensor, n_cond: int, text: torch.Tensor) -> torch.Tensor:
        """Cosmos's transformer on latent frames (b, T, v, z, h, w) with one rectified-flow time per frame (b, T),
        the first `n_cond` frames marked as conditioning; returns its raw output, same shape. Equals
        `CosmosTransformer3DModel.forward` on the same inputs (tested where torchvision is installed; its forward
        resizes the padding mask with torchvision, which is all this reimplements)."""
        bb = self.backbone
        b, T, v, z, h, w = lat.shape
        x = lat.permute(0, 3, 1, 4, 2, 5).reshape(b, z, T, h, v * w)  # views side by side
        mask = x.new_zeros(b, 1, T, h, v * w)
        mask[:, :, :n_cond] = 1
        x = torch.cat([x, mask], dim=1)
        if bb.config.concat_padding_mask:
            x = torch.cat([x, x.new_zeros(b, 1, T, h, v * w)], dim=1)
        rope = bb.rope(x, fps=None)
        extra = bb.learnable_pos_embed(x) if bb.config.extra_pos_embed_type else None
        pt, ph, pw = self.patch
        hidden = bb.patch_embed(x).flatten(1, 3)  # (b, T*h'*w', d)
        per_frame = (h // ph) * (v * w // pw)
        temb, emb = bb.time_embed(hidden, times.flatten().to(hidden.dtype))
        temb, emb = (e.reshape(b, T, 1, -1).expand(-1, -1, per_frame, -1).flatten(1, 2) for e in (temb, emb))
        if bb.config.use_crossattn_projection:
            text = bb.crossattn_proj(text)
        for block in self.blocks:
            hidden = self.run_block(block, hidden, text.to(hidden.dtype), emb, temb, rope, extra, None)
        hidden = bb.proj_out(bb.norm_out(hidden, emb, temb))  # (b, n, ph*pw*pt*z), Cosmos's own order
        hidden = hidden.reshape(b, T // pt, h // ph, v * w // pw, ph, pw, pt, z)
        out = hidden.permute(0, 7, 1, 6, 2, 4, 3, 5).reshape(b, z, T, h, v * w)
        return out.reshape(b, z, T, h, v, w).permute(0, 2, 4, 1, 3, 5)


def build(cfg: ModelConfig) -> CosmosWAM:
    """The "cosmos" row of backbones.BACKBONES: the adapter on the folder's transformer, VAE and text encoder."""
    return CosmosWAM(cfg, *from_folder(cfg))
