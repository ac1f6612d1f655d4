"""Helpers for tests and dry runs: random batches with the shapes a config declares, tiny random diffusers
folders of the real backbone classes (loaded through exactly the code path real weights take), and synthetic
robot datasets of any size in the LeRobotDataset v3.0 layout."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from wam.config import ModelConfig
from wam.data.windows import Batch
from wam.data.writer import DatasetSpec, DatasetWriter, Episode
from wam.models.base import Context
from wam.models.folders import KINDS
from wam.types import Observation, PolicyMetadata


CONTRACT = {"cameras": ("oblique", "top"), "state_dim": 4, "action_dim": 4}
"""The data contract of the tests' models built without a dataset (Meta-World's shapes, which the golden values
were pinned at). A model trained on data takes its contract from the data (ModelConfig.for_data)."""


def concrete(x):
    """A preset (config.Preset) or a ModelConfig with the tests' data contract filled in (CONTRACT)."""
    if isinstance(x, ModelConfig):
        return x.for_data(**CONTRACT)
    return dataclasses.replace(x, model=x.model.for_data(**CONTRACT))


def fake_batch(cfg: ModelConfig, b: int = 2, seed: int = 0) -> Batch:
    """A random batch with the shapes the config declares (for tests)."""
    cfg = cfg.resolved()
    g = torch.Generator().manual_seed(seed)
    s, H = cfg.future_size, cfg.image_size
    ctx = Context(images=torch.rand(b, cfg.context_frames, cfg.views, 3, H, H, generator=g) * 2 - 1,
                  state=torch.randn(b, cfg.state_dim, generator=g), text=torch.randn(b, cfg.text_dim, generator=g))
    return Batch(context=ctx, video=torch.rand(b, cfg.future_frames, cfg.views, 3, s, s, generator=g) * 2 - 1,
                 video_mask=torch.ones(b, cfg.future_frames), actions=torch.rand(b, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1,
                 action_mask=torch.ones(b, cfg.action_horizon), has_actions=torch.ones(b, dtype=torch.bool))


def fake_observation(spec: PolicyMetadata, seed: int = 0, prompt: str = "close the drawer") -> Observation:
    """A random observation with exactly the keys, dtypes and shapes a policy declares."""
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, spec.image_shape(), dtype=np.uint8) for c in spec.cameras}
    state = rng.standard_normal(spec.state_dim).astype(np.float32) if spec.state_dim else None
    return Observation(images=images, state=state, prompt=prompt)


class RecordingEnv:
    """An environment that keeps every action executed in it (to compare two runs step by step)."""

    def __init__(self, env):
        self.env, self.actions = env, []

    def reset(self, seed: int) -> Observation:
        return self.env.reset(seed)

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        self.actions.append(np.array(action))
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


TINY_WORDS = ("press the button from top close drawer reach goal to a put on open push pick place "
              "with gripper red green blue").split()


def save_tiny(root: str | Path, kind: str, seed: int = 0, vae: str = "2.1") -> Path:
    """A diffusers folder of `kind` with tiny random configs of the real classes (for tests and dry runs).
    vae "2.2": the Wan 2.2 VAE's structure (residual, 2x2 pixel patchify first: 16x smaller frames)."""
    import transformers

    from wam.extras import require

    diffusers = require("diffusers", "save_tiny")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    root = Path(root)
    torch.manual_seed(seed)
    text_dim, z = 16, 4
    wan22 = dict(is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                                     temperal_downsample=[False, True, True], latents_mean=[0.0] * z,
                                     latents_std=[1.0] * z, **(wan22 if vae == "2.2" else {}))
    if kind == "wan":
        transformer = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=z, out_channels=z,
            text_dim=text_dim, freq_dim=32, ffn_dim=48, num_layers=2, rope_max_seq_len=64)
        enc_cls, enc_cfg = transformers.UMT5EncoderModel, transformers.UMT5Config
        pipeline = "WanPipeline"
    elif kind == "cosmos":
        transformer = diffusers.CosmosTransformer3DModel(
            in_channels=z + 1, out_channels=z, num_attention_heads=2, attention_head_dim=12, num_layers=2,
            mlp_ratio=2.0, text_embed_dim=text_dim, adaln_lora_dim=8, max_size=(32, 64, 128), patch_size=(1, 2, 2),
            rope_scale=(1.0, 1.0, 1.0), concat_padding_mask=True, extra_pos_embed_type="learnable")
        enc_cls, enc_cfg = transformers.T5EncoderModel, transformers.T5Config
        pipeline = "Cosmos2VideoToWorldPipeline"
    else:
        raise ValueError(f"unknown backbone {kind!r}; expected one of {', '.join(KINDS)}")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TINY_WORDS)}}
    encoder = enc_cls(enc_cfg(vocab_size=len(vocab), d_model=text_dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                              pad_token_id=0, eos_token_id=1))
    transformer.save_pretrained(root / "transformer")
    vae.save_pretrained(root / "vae")
    encoder.save_pretrained(root / "text_encoder")
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(root / "tokenizer")
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
             "transformer": ["diffusers", type(transformer).__name__], "vae": ["diffusers", "AutoencoderKLWan"],
             "text_encoder": ["transformers", enc_cls.__name__], "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


# ============================================================================================ synthetic datasets
def synthetic_episode(spec: DatasetSpec, length: int, task: str, task_index: int, rng: np.random.Generator) -> Episode:
    """A structured episode: a square in the task's colour glides over a gradient, from a random start to a
    random goal; state[:2] is its (x, y) in [0, 1] (camera i > 0 sees it mirrored), action[:2] its velocity."""
    s, a = len(spec.state_names), len(spec.action_names)
    t = np.linspace(0.0, 1.0, length)[:, None]  # (T, 1)
    start, goal = rng.uniform(0.1, 0.9, (2, 2))
    xy = start + (goal - start) * t * t * (3 - 2 * t) + 0.03 * np.sin(2 * np.pi * (t + rng.uniform()))  # (T, 2)
    state = np.concatenate([xy, np.sin(2 * np.pi * t * np.arange(1, s - 1))], 1)  # (T, s)
    velocity = np.diff(xy, axis=0, append=xy[-1:]) * spec.fps  # (T, 2)
    grip = np.where(t < 0.5, -1.0, 1.0)
    action = np.concatenate([velocity, grip, np.cos(np.pi * t * np.arange(1, a - 2))], 1)[:, :a]  # (T, a)
    colour = np.array([(97 * task_index + 200) % 256, (53 * task_index + 40) % 256, (151 * task_index) % 256], np.uint8)
    images = {}
    for c, (cam, (h, w)) in enumerate(spec.cameras.items()):
        frames = np.empty((length, h, w, 3), np.uint8)
        frames[:] = _gradient(h, w, c)
        side = max(2, min(h, w) // 8)
        x = xy[:, 0] if c == 0 else 1 - xy[:, 0]
        cols = np.clip(np.round(x * (w - side)), 0, w - side).astype(int)
        rows = np.clip(np.round(xy[:, 1] * (h - side)), 0, h - side).astype(int)
        for i, (y0, x0) in enumerate(zip(rows, cols)):
            frames[i, y0:y0 + side, x0:x0 + side] = colour
        images[cam] = frames
    return Episode(images=images, state=state.astype(np.float32), action=action.astype(np.float32), task=task,
                   success=np.arange(length) == length - 1)


def _gradient(h: int, w: int, camera: int) -> np.ndarray:
    """(h, w, 3) uint8: red rises left to right, green top to bottom, blue by camera."""
    red = np.broadcast_to(np.linspace(30, 220, w, dtype=np.float32), (h, w))
    green = np.broadcast_to(np.linspace(20, 180, h, dtype=np.float32)[:, None], (h, w))
    return np.stack([red, green, np.full((h, w), 60.0 + 50 * (camera % 4))], -1).astype(np.uint8)


def synthetic_dataset(root: str | Path, episodes: int = 4, length: int | Sequence[int] = 20,
                      cameras: dict[str, tuple[int, int]] | None = None, state_dim: int = 4, action_dim: int = 4,
                      fps: int = 10, tasks: int | Sequence[str] = 2, storage: str | dict[str, str] = "video",
                      data_file_mb: float = 100, video_file_mb: float = 200, chunks_size: int = 1000, seed: int = 0,
                      progress: bool = False, preset: str = "veryfast", crf: int = 18, overwrite: bool = False) -> Path:
    """Write a deterministic synthetic robot dataset (see `synthetic_episode`) through DatasetWriter; returns root.

    length: every episode's, or the values each episode's length is drawn from (e.g. range(50, 301)).
    cameras: name -> (height, width); default {"front": (64, 64)}. tasks: how many, or their instructions;
    episode i does task i % len(tasks). The rest are DatasetSpec and DatasetWriter settings; preset="ultrafast"
    encodes fastest."""
    from tqdm import tqdm

    lengths = [length] if isinstance(length, int) else list(length)
    if episodes < 1 or not lengths or min(lengths) < 1:
        raise ValueError(f"need episodes >= 1 and lengths >= 1, got episodes={episodes}, length={length}")
    if state_dim < 2 or action_dim < 1:
        raise ValueError(f"need state_dim >= 2 (the square's x, y) and action_dim >= 1, got {state_dim}, {action_dim}")
    names = [f"synthetic task {i}" for i in range(tasks)] if isinstance(tasks, int) else list(tasks)
    spec = DatasetSpec(fps=fps, cameras=cameras or {"front": (64, 64)}, storage=storage, robot_type="synthetic",
                       state_names=tuple(f"state_{i}" for i in range(state_dim)),
                       action_names=tuple(f"action_{i}" for i in range(action_dim)), success=True)
    writer = DatasetWriter(root, spec, overwrite=overwrite, extra={"synthetic": {"seed": seed}},
                           chunks_size=chunks_size, data_file_mb=data_file_mb, video_file_mb=video_file_mb,
                           preset=preset, crf=crf)
    rng = np.random.default_rng(seed)
    try:
        for i in tqdm(range(episodes), desc="synthetic", unit="ep", disable=not progress):
            task = i % len(names)
            writer.add(synthetic_episode(spec, int(rng.choice(lengths)), names[task], task, rng))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def skip_without_pretrained() -> None:
    """Skip the calling test (or module) unless the pretrained extra is installed at the versions it needs: not
    installed, or too old (lerobot's venv pins diffusers<0.36), the reason names the pip command."""
    import pytest

    from wam.extras import unavailable

    reason = unavailable("diffusers", "a pretrained backbone") or unavailable("peft", "LoRA fine-tuning")
    if reason:
        pytest.skip(reason, allow_module_level=True)
