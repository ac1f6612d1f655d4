"""`wam imagine CHECKPOINT`: roll the world model forward, open loop, and compare with what really happened.

Starting from one real frame, the model predicts the next frames under a chunk of actions; the last predicted
frame becomes the next context, and so on: every frame after the first is imagined. At the camera's resolution the
next context is the current one plus the predicted change (upsampled from the model's future size), so what the
model leaves unchanged keeps its detail. The actions come either from a dataset episode (`--data DIR --episode N`, the recorded actions)
or from the model itself in policy mode, reading its own imagined frames (`--task`, no dataset); in that case
the same actions are also executed in Meta-World, so the real frames they lead to are known too.

The robot state the model reads is taken from the real trajectory (the model does not predict it).
Writes OUT/imagine.mp4 (real frames above, imagined below, cameras side by side) and
OUT/imagine.json with the PSNR and SSIM of every imagined frame against the real one, next to a "nothing moves"
baseline (the first real frame held). With `--episodes 0:30` (several held-out episodes) the model is loaded once,
each episode is written to OUT/episode-N/, and OUT/imagine.json holds them all with the means over episodes: the
open-loop metric over a held-out set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from wam.config import SamplerConfig, apply, overrides_of
from wam.evaluate import EVAL_SEED
from wam.metrics import psnr, ssim

SamplerOverrides = overrides_of(SamplerConfig, "SamplerOverrides", aliases={"video_steps": ("--steps",)})


@dataclass(frozen=True)
class ImagineConfig:
    checkpoint: tyro.conf.Positional[Path]
    data: Path | None = None
    """Dataset to take the recorded actions and real frames from (omit to act with the policy in Meta-World)."""
    episode: int = 0
    """Episode of --data to replay."""
    episodes: str | None = None
    """Several episodes of --data instead (the reader's syntax: 0:20,25): the model is loaded once, each episode is
    imagined as --episode would be, into OUT/episode-N/, and OUT/imagine.json holds every episode's result and the
    means over them."""
    task: str | None = None
    """Without --data: Meta-World task to imagine (default: the checkpoint's first task)."""
    seed: int = EVAL_SEED
    """Without --data: variation seed of the task."""
    horizon: int = 96
    """Environment steps to imagine."""
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    """Changes to the checkpoint's own sampler; the frames get at least as many steps as the actions (--steps N is
    the old spelling of --sampler.video-steps N)."""
    backbone_path: Path | None = None
    """A pretrained backbone's diffusers folder (default: the one the checkpoint records; its fingerprint must match)."""
    out: Path | None = None
    """Output folder (default: CHECKPOINT/../imagine)."""

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")


class _Recorded:
    """Real frames, states and actions of a dataset episode."""

    def __init__(self, root: Path, episode: int, cfg, config: dict):
        from wam.data.frames import FrameStore
        from wam.data.reader import data_config_of, read_dataset

        rec = read_dataset(root, data_config_of(config, episodes=str(episode)))
        if not rec.has_actions[0]:
            raise ValueError(f"episode {episode} of {root} is action-free: there are no actions to imagine under")
        frames = FrameStore(rec, cfg.image_size, rec.data.resize, progress=False)
        t = np.arange(len(rec.index))
        self.images = np.stack([frames.read(v, t) for v in range(len(rec.cameras))], axis=1)  # (T, v, H, W, 3)
        self.state, self.action = rec.state[:, :cfg.state_dim], rec.action
        self.instruction = rec.instructions[int(rec.task_index[0])]
        self.length = len(t)

    def frame(self, t: int) -> np.ndarray:
        return self.images[min(t, self.length - 1)]

    def state_at(self, t: int) -> np.ndarray:
        return self.state[min(t, self.length - 1)]

    def actions(self, t: int, k: int) -> np.ndarray:
        return self.action[np.minimum(np.arange(t, t + k), self.length - 1)]


class _Simulated:
    """Meta-World executing the imagined policy's actions, open loop, to show where they really lead."""

    def __init__(self, env_name: str, seed: int, cfg):
        from wam.envs import make_env

        self.cameras = cfg.cameras
        self.env = make_env(env_name, cfg.cameras, cfg.image_size)
        obs = self.env.reset(seed)
        self.frames, self.states = [self._views(obs)], [obs.state]
        self.instruction = obs.prompt

    def _views(self, obs) -> np.ndarray:
        return np.stack([obs.images[c] for c in self.cameras])  # (v, H, W, 3)

    def execute(self, actions: np.ndarray) -> None:
        for a in actions:
            obs, _ = self.env.step(a)
            self.frames.append(self._views(obs))
            self.states.append(obs.state)

    def frame(self, t: int) -> np.ndarray:
        return self.frames[min(t, len(self.frames) - 1)]

    def state_at(self, t: int) -> np.ndarray:
        return self.states[min(t, len(self.states) - 1)]


def frame_at(frames: dict[int, np.ndarray], step: int) -> np.ndarray:
    """Of frames by environment step, the newest at or before `step` (the first one for steps before it)."""
    return frames[max(k for k in frames if k <= max(0, step))]


def next_context(now: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """A predicted frame at the camera's resolution: the current frame `now` (..., 3, H, W) plus the change the
    model predicts (`predicted` (..., 3, s, s) minus `now` pooled to s), upsampled, so what the model does not
    change keeps its detail (upsampling the s px prediction itself would blur the whole view at every chunk, a
    context no model was trained on). Model units in and out."""
    lead, (H, s) = now.shape[:-3], (now.shape[-1], predicted.shape[-1])
    now, predicted = now.reshape(-1, *now.shape[-3:]), predicted.reshape(-1, *predicted.shape[-3:])
    change = predicted - F.avg_pool2d(now, H // s)
    up = (now + F.interpolate(change, size=H, mode="bilinear", align_corners=False)).clamp(-1, 1)
    return up.reshape(*lead, *up.shape[-3:])


MEANS = ("mean_psnr", "mean_psnr_static", "mean_ssim", "mean_ssim_static")


@torch.no_grad()
def imagine(cfg: ImagineConfig) -> dict:
    from wam import modes
    from wam.checkpoint import load_model

    if cfg.episodes is not None and cfg.data is None:  # checked here, not in __post_init__: tyro would box the message
        raise ValueError(f"--episodes {cfg.episodes} replays episodes of a dataset: give --data DIR too")
    if cfg.episodes is not None and cfg.episode != 0:
        raise ValueError(f"give --episode N or --episodes SPEC, not both (got {cfg.episode} and {cfg.episodes})")
    model, norm, config = load_model(Path(cfg.checkpoint), cfg.backbone_path)
    m = model.cfg
    modes.check_mode(m.recipe, "world_model")
    if cfg.data is None:
        modes.check_mode(m.recipe, "policy")
    sampler = apply(SamplerConfig(**config.get("sampler", {})), cfg.sampler).resolve(m.recipe)
    if cfg.data is None and not cfg.task and not config["data"].get("tasks"):
        raise ValueError(f"{cfg.checkpoint} was trained on data with no simulator: imagine a recorded episode, wam "
                         f"imagine {cfg.checkpoint} --data DIR --episode N")
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "imagine"
    if cfg.episodes is None:
        source = (_Recorded(Path(cfg.data), cfg.episode, m, config) if cfg.data is not None
                  else _Simulated(f"metaworld:{cfg.task or config['data']['tasks'][0]}", cfg.seed, m))
        return _rollout(cfg, model, norm, sampler, source, out, verbose=True)

    from tqdm import tqdm

    from wam.data.reader import data_config_of, read_dataset

    ids = [int(e) for e in read_dataset(Path(cfg.data), data_config_of(config, episodes=cfg.episodes)).episode_ids]
    runs = [_rollout(cfg, model, norm, sampler, _Recorded(Path(cfg.data), e, m, config), out / f"episode-{e}",
                     verbose=False, episode=e) for e in tqdm(ids, desc="imagine", unit="episode")]
    result = {"checkpoint": str(cfg.checkpoint), "source": str(cfg.data), "episodes": ids, "horizon": cfg.horizon,
              **{k: float(np.mean([r[k] for r in runs])) for k in MEANS},
              "ssim_above_held": int(sum(r["mean_ssim"] > r["mean_ssim_static"] for r in runs)), "per_episode": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "imagine.json").write_text(json.dumps(result, indent=2))
    print(f"{'episode':>7s} {'PSNR imagined':>14s} {'first frame held':>17s} {'SSIM imagined':>14s} {'first frame held':>17s}")
    for e, r in zip(ids, runs):
        print(f"{e:7d} " + " ".join(f"{r[k]:{w}.{d}f}" for k, w, d in zip(MEANS, (14, 17, 14, 17), (2, 2, 3, 3))))
    print(f"{'mean':>7s} " + " ".join(f"{result[k]:{w}.{d}f}" for k, w, d in zip(MEANS, (14, 17, 14, 17), (2, 2, 3, 3)))
          + f"   (SSIM above the held frame in {result['ssim_above_held']} of {len(ids)} episodes)")
    print(f"videos (real above, imagined below): {out}/episode-N/imagine.mp4")
    return result


def _rollout(cfg: ImagineConfig, model, norm, sampler, source, out: Path, verbose: bool,
             episode: int | None = None) -> dict:
    """One episode imagined open loop from its first frame; writes OUT/imagine.mp4 and OUT/imagine.json."""
    from wam import modes
    from wam.data.transforms import images_from_model, images_to_model
    from wam.models.base import Context
    from wam.text import embed
    from wam.video import write_mp4

    m = model.cfg
    text = torch.from_numpy(embed([source.instruction]))
    horizon = min(cfg.horizon, source.length - 1) if isinstance(source, _Recorded) else cfg.horizon
    chunk = m.future_offsets[-1]  # env steps covered by one prediction
    if chunk > m.action_horizon:
        raise ValueError(f"the model predicts frames {chunk} steps ahead but only {m.action_horizon} actions: "
                         "it cannot be rolled forward on its own actions")
    g = torch.Generator().manual_seed(0)
    imagined: dict[int, np.ndarray] = {0: source.frame(0)}  # env step -> (v, H, W, 3) uint8
    small: dict[int, np.ndarray] = {}  # env step -> (v, s, s, 3) imagined at the model's resolution
    t = 0
    while t < horizon:
        ctx_frames = np.stack([frame_at(imagined, t + o) for o in m.context_offsets])
        ctx = Context(images=images_to_model(torch.from_numpy(ctx_frames))[None],
                      state=norm.state(torch.as_tensor(source.state_at(t), dtype=torch.float32))[None], text=text)
        if isinstance(source, _Recorded):
            actions = norm.actions(torch.from_numpy(source.actions(t, m.action_horizon)))[None]
        else:
            _, actions = modes.run(model, "policy", ctx, sampler, generator=g)
            source.execute(norm.unactions(actions[0]).clamp(-1, 1).numpy()[:chunk])
        frames, _ = modes.run(model, "world_model", ctx, sampler, actions=actions, generator=g)
        for i, o in enumerate(m.future_offsets):
            pred = frames[0, i]  # (v, 3, s, s)
            small[t + o] = images_from_model(pred)
            imagined[t + o] = images_from_model(next_context(ctx.images[0, -1], pred))
        t += chunk

    # Compare at the model's resolution: real frames pooled the way training targets are.
    s = m.future_size
    def pooled(x: np.ndarray) -> np.ndarray:
        return images_from_model(F.avg_pool2d(images_to_model(torch.from_numpy(x)), m.image_size // s))

    first = pooled(source.frame(0))
    rows, video = [], []
    for step in sorted(small):
        if step > horizon:
            break
        real = pooled(source.frame(step))
        rows.append({"step": step, "psnr": psnr(small[step], real), "psnr_static": psnr(first, real),
                     "ssim": float(ssim(small[step], real).mean()), "ssim_static": float(ssim(first, real).mean())})
        rep = m.image_size // s
        big = lambda x: np.concatenate([np.kron(v, np.ones((rep, rep, 1), np.uint8)) for v in x], axis=1)  # noqa: E731
        video.append(np.concatenate([np.concatenate(list(source.frame(step)), axis=1), big(small[step])], axis=0))
    out.mkdir(parents=True, exist_ok=True)
    write_mp4(str(out / "imagine.mp4"), np.stack(video), fps=4)
    result = {"checkpoint": str(cfg.checkpoint), "source": str(cfg.data) if cfg.data else "policy",
              "episode": (cfg.episode if episode is None else episode) if cfg.data else None,
              "task_instruction": source.instruction,
              "seed": None if cfg.data else cfg.seed, "frames": rows,
              "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
              "mean_psnr_static": float(np.mean([r["psnr_static"] for r in rows])),
              "mean_ssim": float(np.mean([r["ssim"] for r in rows])),
              "mean_ssim_static": float(np.mean([r["ssim_static"] for r in rows]))}
    (out / "imagine.json").write_text(json.dumps(result, indent=2))
    if not verbose:
        return result
    print(f"{'step':>5s} {'PSNR imagined':>14s} {'first frame held':>17s} {'SSIM imagined':>14s} {'first frame held':>17s}")
    for r in rows:
        print(f"{r['step']:5d} {r['psnr']:14.1f} {r['psnr_static']:17.1f} {r['ssim']:14.3f} {r['ssim_static']:17.3f}")
    print(f"mean  {result['mean_psnr']:14.1f} {result['mean_psnr_static']:17.1f} {result['mean_ssim']:14.3f} "
          f"{result['mean_ssim_static']:17.3f}")
    print(f"video (real above, imagined below): {out / 'imagine.mp4'}")
    return result
