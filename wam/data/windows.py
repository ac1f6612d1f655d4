"""Training windows served exactly as the model config declares them, and the normaliser.

For a frame t of an episode, a window holds: the context frames at t + context_offsets (clamped to the
episode's first frame), the future frames at t + future_offsets (masked past the episode's end), the
action chunk t .. t+k-1 (masked past the end), the state at t and the instruction's embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from wam.config import ModelConfig
from wam.data.frames import FrameStore
from wam.data.reader import Recordings
from wam.data.transforms import Normalizer, images_to_model, shift
from wam.models.base import Context


@dataclass
class Batch:
    context: Context
    video: torch.Tensor  # (b, f, v, 3, s, s) future frames in [-1, 1]
    video_mask: torch.Tensor  # (b, f) 1 where the future frame lies inside the episode
    actions: torch.Tensor  # (b, k, a) normalised
    action_mask: torch.Tensor  # (b, k)
    has_actions: torch.Tensor  # (b,) bool: False for samples from action-free episodes
    future_state: torch.Tensor | None = None  # (b, state_dim) normalised state at the last future frame
    steps_left: torch.Tensor | None = None  # (b,) steps from this frame to the episode's last
    environment_state: torch.Tensor | None = None  # (b, z) standardised observation.environment_state now (an
    #                                                auxiliary target; zeros where unknown, see environment_known)
    environment_known: torch.Tensor | None = None  # (b,) 1 where the sample's environment state is a target


class Windows:
    def __init__(self, rec: Recordings, frames: FrameStore, cfg: ModelConfig, normalizer: Normalizer,
                 text: torch.Tensor, latents: torch.Tensor | None = None):
        """rec: the episodes (reader.py); frames: their frames at the model's size (frames.py); text: one embedding per
        instruction (by task_index). latents (N, v, z, h, w): a pretrained backbone's VAE latents of every frame
        (data/latents.py); the windows then carry latent context (Context.latents) and latent future frames."""
        cfg = cfg.resolved()
        if tuple(cfg.cameras) != rec.camera_names:
            raise ValueError(f"the model reads cameras {list(cfg.cameras)} but the data gives {list(rec.camera_names)}; "
                             f"choose them with --data.cameras {','.join(cfg.cameras)}")
        if frames.size != cfg.image_size:
            raise ValueError(f"the frames are cached at {frames.size} px but the model reads {cfg.image_size} px")
        self.cfg, self.norm, self.text = cfg, normalizer, text
        self.frames = frames
        self.state = torch.from_numpy(rec.state[:, :cfg.state_dim])
        self.actions = torch.from_numpy(rec.action)
        self.task = torch.from_numpy(rec.task_index)
        ep = rec.episode_of
        self.ep_from = rec.episode_from[ep]  # (N,) first index of each frame's episode
        self.ep_to = rec.episode_to[ep]  # (N,) one past its last
        self.labelled = torch.from_numpy(rec.has_actions[ep])  # (N,) bool
        self.from_video = ~self.labelled  # (N,) bool: the data gave these frames no actions (true after labelling too)
        self.known = torch.from_numpy(rec.has_state[ep]).float() if not rec.has_state.all() else None  # (N,)
        self.latents = latents
        self.n = len(ep)
        self.environment = None  # (N, z) standardised, when the model has the head (an auxiliary target)
        if cfg.environment_state_dim and rec.environment_state is not None:  # (train checks the data has it)
            self.environment, self.environment_known = standardised_environment(rec, cfg.environment_state_dim)

    def images(self, idx: np.ndarray) -> torch.Tensor:
        """uint8 (*idx.shape, v, H, W, 3): every camera's frames at positions idx."""
        idx = np.asarray(idx)
        frames = np.stack([self.frames.read(v, idx) for v in range(self.cfg.views)], axis=1)
        return torch.from_numpy(frames.reshape(*idx.shape, *frames.shape[1:]))

    def __len__(self) -> int:
        return self.n

    def get(self, idx: np.ndarray, shift_px: int = 0, generator: torch.Generator | None = None) -> Batch:
        """The windows at global frame indices `idx`, optionally random-shift augmented by up to `shift_px`."""
        cfg = self.cfg
        idx = np.asarray(idx)
        lo, hi = self.ep_from[idx], self.ep_to[idx]
        ctx_i = np.maximum(idx[:, None] + np.asarray(cfg.context_offsets)[None], lo[:, None])  # (b, c)
        fut_i = idx[:, None] + np.asarray(cfg.future_offsets, dtype=np.int64).reshape(1, -1)  # (b, f)
        fut_ok = fut_i < hi[:, None]
        fut_i = np.minimum(fut_i, hi[:, None] - 1)
        act_i = idx[:, None] + np.arange(cfg.action_horizon)[None]  # (b, k)
        act_ok = act_i < hi[:, None]  # action-free samples are masked by `has_actions` in the loss
        act_i = np.minimum(act_i, hi[:, None] - 1)

        frames = np.concatenate([ctx_i, fut_i], axis=1)  # (b, c+f)
        known = self.known[idx] if self.known is not None else None  # (b,) 0 for action-free video
        extras = {"future_state": self.norm.state(self.state[fut_i[:, -1] if fut_i.shape[1] else idx]),
                  "steps_left": torch.from_numpy(hi - 1 - idx)}
        if self.environment is not None:
            extras.update(environment_state=self.environment[idx], environment_known=self.environment_known[idx])
        if self.latents is not None:  # pretrained backbone: latent frames, no pixel augmentation
            c = cfg.context_frames
            lat = self.latents[torch.from_numpy(frames)].float()  # (b, c+f, v, z, h, w)
            images = images_to_model(self.images(ctx_i))
            context = Context(images=images, state=self.norm.state(self.state[idx]), text=self.text[self.task[idx]],
                              latents=lat[:, :c], state_known=known)
            return Batch(context=context, video=lat[:, c:], video_mask=torch.from_numpy(fut_ok).float(),
                         actions=self.norm.actions(self.actions[act_i]), action_mask=torch.from_numpy(act_ok).float(),
                         has_actions=self.labelled[idx], **extras)
        state = self.norm.state(self.state[idx])
        if known is not None:  # an absent state reads as zeros, and the model is told it is absent
            state = state * known[:, None]
        return pixel_batch(cfg, self.images(frames), state=state, state_known=known, text=self.text[self.task[idx]],
                           actions=self.norm.actions(self.actions[act_i]), action_mask=torch.from_numpy(act_ok).float(),
                           video_mask=torch.from_numpy(fut_ok).float(), has_actions=self.labelled[idx],
                           shift_px=shift_px, generator=generator, **extras)


def standardised_environment(rec: Recordings, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, dim) observation.environment_state standardised over the labelled episodes' frames (an entry that never
    varies, such as a task's absent second object, stays 0), and (N,) 1 for those frames: the auxiliary target is
    trained only where actions are known, as privileged state of video from elsewhere would not be."""
    if rec.environment_state is None or rec.environment_state.shape[1] != dim:
        got = "none" if rec.environment_state is None else f"{rec.environment_state.shape[1]} entries"
        raise ValueError(f"the model predicts a {dim}-entry observation.environment_state but the data has {got}; "
                         f"collect with `wam collect` (which records it) or set --train.environment-state-weight 0")
    mean, std, known = environment_stats(rec)
    z = (rec.environment_state - mean) / std
    return torch.from_numpy(z.astype(np.float32)), torch.from_numpy(known.astype(np.float32))


def environment_stats(rec: Recordings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std) of observation.environment_state over the labelled episodes' frames, std 1 where it never varies:
    what the head's standardised outputs are in units of (wam train does not store them; they are the data's); and
    (N,) True for those frames."""
    known = np.repeat(rec.has_actions, rec.episode_to - rec.episode_from)
    x = rec.environment_state[known] if known.any() else rec.environment_state
    std = x.std(0)
    return x.mean(0), np.where(std > 1e-6, std, 1.0), known


def pixel_batch(cfg: ModelConfig, frames: torch.Tensor, *, state: torch.Tensor, text: torch.Tensor, actions: torch.Tensor,
                action_mask: torch.Tensor, video_mask: torch.Tensor, has_actions: torch.Tensor, shift_px: int = 0,
                generator: torch.Generator | None = None, state_known: torch.Tensor | None = None, **extras) -> Batch:
    """A pixel backbone's batch from one window of frames: uint8 frames (b, c+f, v, H, W, 3) at the context offsets
    then the future offsets, at the model's image size; state (b, state_dim) and actions (b, k, a) normalised.
    The frames are random-shift augmented by up to `shift_px` (context and future alike, one shift per sample and
    camera) and the future ones average-pooled to future_size: the training targets. `state_known` (b,): 0 where the
    state is absent (action-free video). `Windows.get` builds its
    batches with it, and so does the lerobot plugin from a LeRobotDataset's frames (packages/lerobot_policy_wam)."""
    cfg = cfg.resolved()
    images = images_to_model(frames)  # (b, c+f, v, 3, H, W)
    if shift_px:
        images = shift(images, shift_px, generator)
    c, b = cfg.context_frames, frames.shape[0]
    future = images[:, c:].flatten(0, 2)  # (b*f*v, 3, H, W)
    future = F.avg_pool2d(future, cfg.image_size // cfg.future_size) if len(future) else future
    future = future.reshape(b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)
    context = Context(images=images[:, :c], state=state, text=text, state_known=state_known)
    return Batch(context=context, video=future, video_mask=video_mask, actions=actions, action_mask=action_mask,
                 has_actions=has_actions, **extras)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    tensors = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "context"}
    return replace(batch, context=batch.context.apply(lambda x: x.to(device)),
                   **{k: v.to(device) for k, v in tensors.items() if v is not None})


