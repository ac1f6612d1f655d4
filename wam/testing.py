"""Helpers for tests and dry runs: random batches with the shapes a config declares, and tiny random diffusers
folders of the real backbone classes (loaded through exactly the code path real weights take)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from wam.config import ModelConfig
from wam.data.windows import Batch
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
