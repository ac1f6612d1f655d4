"""A Vision-Language-Action model: a VLM prefix and a flow-matching action expert that reads it (recipe `vla`), and
the same model with foresight (recipe `hybrid-foresight`).

Notation as in transformer.py: b batch, k action horizon, d the expert's width, m prefix tokens.

    prefix   the VLM (models/vlm: PaliGemma or SmolVLM through transformers, or the offline EfficientNet-Lite0 +
             MiniLM prefix) reads every camera image and the instruction; its hidden states of every layer are kept
    expert   `depth` adaLN-zero blocks (transformer.Block) over its own tokens: the robot state (clean, one token, as
             π0's suffix), the actions (noisy) and, with foresight, the future-frame patches (noisy). Block j also
             attends to the prefix: the VLM's hidden state of layer round((j + 1) L / depth), through the expert's own
             key/value projection (SmolVLA reads selected VLM layers this way; π0 reads every layer's keys and
             values, here the depths need not match). Prefix tokens never read the expert's (prefix-LM, as π0).
    who reads whom inside the expert is the recipe's (recipes.py; the state token is group "c"):
        vla               actions read state and actions; no frames
        hybrid-foresight  frames read state, frames and actions; actions never read the frames, so the frame tokens
                          can be left out at inference and the actions are the same (the frames are a second output
                          trained jointly: they shape the prefix and the expert's weights, and cost nothing when skipped)

`encode` runs the VLM and the state token once per chunk and keeps their keys/values (the KV-cached prefix);
`decode` runs the action (and frame) tokens against them at every denoising step. `forward` is the same function in
one call (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from wam.config import ModelConfig
from wam.models.base import Capabilities, Context
from wam.models.transformer import (ACTION, CONTEXT, VIDEO, Block, FinalLayer, TimestepEmbedder, patchify,
                                    unpatchify)
from wam.recipes import action_reads, attention_mask, recipe


def make_prefix(cfg: ModelConfig) -> nn.Module:
    """The VLM a config names: `lite` (offline encoders), or a transformers folder (`paligemma`, `smolvlm`)."""
    images = cfg.context_frames * cfg.views
    if cfg.backbone == "lite":
        from wam.models.vlm.lite import LitePrefix

        return LitePrefix(images, cfg.prefix_width, cfg.prefix_depth, max(1, cfg.prefix_width // 64), cfg.keypoints,
                          cfg.image_size // 16, cfg.image_encoder_path)
    from wam.models.vlm.hf import TransformersVLM

    return TransformersVLM(cfg.backbone_path, cfg.backbone, images)


@dataclass
class Prefix:
    """What `encode` keeps for the denoising steps of one chunk."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block (b, heads, m + n, d/heads): VLM, then the expert's cached tokens
    keys: torch.Tensor  # (b, m + n) bool: which of them may be read (not padding)
    n: int  # expert tokens in the prefix
    current: torch.Tensor | None  # (b, v, 3, s, s)
    video_out: torch.Tensor | None  # raw frame output, when the frames are in the prefix


class PrefixReader(nn.Module):
    """What the VLA and the hybrids share: the VLM, per-block key/value projections of its selected layers, the
    current frame, the fine-tuning hooks (`Capabilities.pretrained`)."""

    def __init__(self, cfg: ModelConfig, depth: int, width: int, heads: int, prefix: nn.Module | None = None):
        super().__init__()
        self.vlm = prefix if prefix is not None else make_prefix(cfg)
        L = self.vlm.layers
        self.reads = [max(1, round((j + 1) * L / depth)) for j in range(depth)]
        self.kv_in = nn.ModuleList([nn.Sequential(nn.LayerNorm(self.vlm.width), nn.Linear(self.vlm.width, 2 * width))
                                    for _ in range(depth)])
        self._heads = heads
        self.text_encoder = None  # the VLM embeds its own instructions
        self._checkpointing = False

    @property
    def prefix_blocks(self) -> list[nn.Module]:
        """The VLM's repeated layers: FSDP shards each as a unit (fsdp.py), beside the expert's `blocks`."""
        return self.vlm.blocks

    # fine-tuning (finetune.py): the pretrained module, its LoRA targets, gradient checkpointing
    @property
    def backbone(self) -> nn.Module:
        return getattr(self.vlm, "model", self.vlm)

    @property
    def lora_targets(self) -> list[str]:
        return self.vlm.lora_targets

    @property
    def gradient_checkpointing(self) -> bool:
        return self._checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self._checkpointing = on
        if on and hasattr(self.backbone, "gradient_checkpointing_enable"):
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return self.vlm.embed_text(list(texts))

    def prefix_kv(self, context: Context) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Run the VLM: per block (k, v) of its selected layer (b, heads, m, d/heads), and the readable keys (b, m)."""
        hidden, real = self.vlm.hidden(context.images.flatten(1, 2), context.text)
        kvs = []
        for proj, layer in zip(self.kv_in, self.reads):
            h = proj(hidden[layer].float())
            b, m, _ = h.shape
            kv = h.reshape(b, m, 2, self._heads, -1).permute(2, 0, 3, 1, 4)
            kvs.append((kv[0], kv[1]))
        return kvs, real

    # What the VLA and the hybrid share beside the prefix (each sets t_embed, state_in, video_in, pos_video, video_out,
    # residual and the stream widths): the frames' shape, tokens and output, the state token, the conditioning.
    def video_shape(self, b: int) -> tuple[int, ...]:
        cfg = self.cfg
        return (b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)

    def _cond(self, t_video: torch.Tensor, t_action: torch.Tensor) -> torch.Tensor:
        """(b, 3, d): the noise level of each group (the state is clean)."""
        b = t_action.shape[0]
        return self.t_embed(torch.stack([torch.ones_like(t_action), t_video, t_action], 1).flatten()).reshape(b, 3, -1)

    def _state(self, context: Context) -> list[torch.Tensor]:
        """The state token (b, 1, d), in a list (empty for a model that reads no state)."""
        if self.state_in is None:
            return []
        state = self.state_in(context.state[:, : self.cfg.state_dim])
        if context.state_known is not None:  # an absent state is a zero token
            state = state * context.state_known[:, None].to(state.dtype)
        return [state[:, None]]

    def _video_tokens(self, noisy_video: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Future-frame patches, each concatenated channel-wise with the same patch of the current frame."""
        b, f = noisy_video.shape[:2]
        vid = torch.cat([noisy_video, current[:, None].expand(-1, f, -1, -1, -1, -1)], dim=3).flatten(0, 2)
        return self.video_in(patchify(vid, self.cfg.future_patch)).reshape(b, -1, self.cfg.width) + self.pos_video

    def _video_out(self, h: torch.Tensor, cond: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        cfg, b = self.cfg, h.shape[0]
        out = self.video_out(h, cond[:, VIDEO])
        out = unpatchify(out.reshape(b * cfg.future_frames * cfg.views, -1, out.shape[-1]), cfg.future_patch, cfg.future_size)
        out = out.reshape(b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)
        return out + current[:, None] if self.residual else out

    def _layout(self, cfg: ModelConfig) -> None:
        """The expert's token groups (n_ctx state, n_vid frames, n_act actions, set before), the recipe's mask over
        them, and what that mask allows (`capabilities`)."""
        groups = torch.tensor([CONTEXT] * self.n_ctx + [VIDEO] * self.n_vid + [ACTION] * self.n_act)
        self.register_buffer("mask", attention_mask(cfg.recipe, groups, cfg.actions_see_frames), persistent=False)
        self.residual = cfg.video_residual and cfg.video_target == "data"
        r = recipe(cfg.recipe)  # read from the recipe: the mask may sit on the meta device (wam bench memory)
        self.capabilities = Capabilities(
            cached=True, frames_in_prefix=bool(self.n_vid) and "a" not in r.video_reads,
            frames_optional=bool(self.n_vid) and "v" not in action_reads(cfg.recipe, cfg.actions_see_frames), pretrained=cfg.backbone != "lite")
        self.graph_outputs = False

    def _init_weights(self, adaln: list[nn.Module], heads: list[nn.Module]) -> None:
        """Xavier linears (the VLM keeps its own), adaLN-zero modulations and zero output heads."""
        theirs = {id(x) for x in self.vlm.modules()}
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in theirs:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in [*adaln, *heads]:
            for p in (*m.ada[-1].parameters(), *(m.linear.parameters() if hasattr(m, "linear") else ())):
                nn.init.zeros_(p)

    def _masked(self, rows: range, past_rows: range, keys: torch.Tensor) -> torch.Tensor:
        """The mask of the expert's tokens `rows` reading the prefix (its readable `keys`), then its cached tokens
        `past_rows`, then themselves."""
        cols = torch.tensor(list(past_rows) + list(rows), dtype=torch.long, device=keys.device)
        return full_mask(self.mask[rows.start:rows.stop][:, cols], keys)


def full_mask(inner: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(b, 1, n, m + n): the prefix keys `keys` (b, m) for every row, then the expert's own mask `inner` (n, n')."""
    b, n = keys.shape[0], inner.shape[0]
    return torch.cat([keys[:, None, None, :].expand(b, 1, n, keys.shape[1]),
                      inner[None, None].expand(b, 1, n, inner.shape[1])], dim=-1)


class VLA(PrefixReader):
    def __init__(self, cfg: ModelConfig, prefix: nn.Module | None = None):
        """prefix: a VLM built elsewhere (None: the one the config names, make_prefix)."""
        cfg = cfg.resolved()
        super().__init__(cfg, cfg.depth, cfg.width, cfg.heads, prefix)
        self.cfg = cfg
        d = cfg.width
        self.state_in = nn.Linear(cfg.state_dim, d) if cfg.state_dim else None
        self.n_ctx = 1 if cfg.state_dim else 0
        self.n_patches = cfg.future_frames * cfg.views * cfg.future_grid**2
        self.n_vid, self.n_act = self.n_patches, cfg.action_horizon
        self.video_in = nn.Linear(6 * cfg.future_patch**2, d) if self.n_vid else None
        self.pos_video = nn.Parameter(torch.randn(1, self.n_vid, d) * 0.02) if self.n_vid else None
        self.video_out = FinalLayer(d, 3 * cfg.future_patch**2) if self.n_vid else None
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.pos_action = nn.Parameter(torch.randn(1, self.n_act, d) * 0.02)
        self.action_out = FinalLayer(d, cfg.action_dim)
        self.t_embed = TimestepEmbedder(d)
        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self._layout(cfg)
        self._init_weights(list(self.blocks), [h for h in (self.video_out, self.action_out) if h is not None])

    # ------------------------------------------------------------------ tokens
    def _run(self, x, cond, segments, rows: range, past: list, keys: torch.Tensor, past_rows: range,
             keep: bool = False) -> tuple:
        """The expert's tokens `rows` through the blocks, reading the prefix (and its cached tokens `past_rows`); with
        `keep` (encode), also each block's keys and values, the prefix's and these tokens', for later tokens to read."""
        mask = self._masked(rows, past_rows, keys)
        kvs = []
        for blk, kv in zip(self.blocks, past):
            if self._checkpointing and self.training:
                x, own = checkpoint(blk, x, cond, segments, mask, kv, use_reentrant=False)
            else:
                x, own = blk(x, cond, segments, mask, kv)
            if keep:  # encode: the prefix's keys and values with these tokens', for decode to read
                kvs.append((torch.cat([kv[0], own[0]], 2), torch.cat([kv[1], own[1]], 2)))
        return x, kvs

    # ------------------------------------------------------------------ the pure tensor function
    def forward(self, noisy_video, noisy_actions, t_video, t_action, context: Context):
        """As WAMTransformer.forward: (raw frame output or None, raw action output)."""
        cond = self._cond(t_video, t_action)
        past, keys = self.prefix_kv(context)
        current = context.current(self.cfg.future_size) if self.n_vid else None
        parts = self._state(context)
        if self.n_vid:
            parts.append(self._video_tokens(noisy_video, current))
        parts.append(self.action_in(noisy_actions) + self.pos_action)
        n = self.n_ctx + self.n_vid + self.n_act
        x, _ = self._run(torch.cat(parts, 1), cond, (self.n_ctx, self.n_vid, self.n_act), range(n), past, keys, range(0))
        vid = self._video_out(x[:, self.n_ctx:self.n_ctx + self.n_vid], cond, current) if self.n_vid else None
        return vid, self.action_out(x[:, -self.n_act:], cond[:, ACTION])

    # ------------------------------------------------------------------ cached inference (the same function)
    def encode(self, context: Context, noisy_video: torch.Tensor | None = None,
               t_video: torch.Tensor | None = None) -> Prefix:
        """The VLM once, and the expert's tokens that never read later ones: the state (and the frames, where they
        never read the actions)."""
        if noisy_video is not None and not self.capabilities.frames_in_prefix:
            raise ValueError(f"recipe {self.cfg.recipe!r}: frame tokens read the actions, so they cannot be cached")
        past, keys = self.prefix_kv(context)
        b = keys.shape[0]
        current = context.current(self.cfg.future_size) if self.n_vid else None
        t_v = t_video if noisy_video is not None else keys.new_ones(b, dtype=torch.float32)
        cond = self._cond(t_v, keys.new_zeros(b, dtype=torch.float32))
        parts = self._state(context)
        if noisy_video is not None:
            parts.append(self._video_tokens(noisy_video, current))
        if not parts:
            return Prefix(kv=past, keys=keys, n=0, current=current, video_out=None)
        x = torch.cat(parts, 1)
        n_v = self.n_vid if noisy_video is not None else 0
        x, kv = self._run(x, cond, (self.n_ctx, n_v, 0), range(x.shape[1]), past, keys, range(0), keep=True)
        video_out = self._video_out(x[:, self.n_ctx:], cond, current) if n_v else None
        own = torch.ones(b, x.shape[1], dtype=torch.bool, device=keys.device)
        return Prefix(kv=kv, keys=torch.cat([keys, own], 1), n=x.shape[1], current=current, video_out=video_out)

    def decode(self, prefix: Prefix, noisy_video, noisy_actions, t_video, t_action):
        """The rest of `forward` after `encode`. With noisy_video None and actions that never read the frames, the
        frame tokens are left out (the frames come back None)."""
        cond = self._cond(t_video, t_action)
        video_here = bool(self.n_vid) and prefix.n == self.n_ctx and noisy_video is not None
        if self.n_vid and prefix.n == self.n_ctx and noisy_video is None and not self.capabilities.frames_optional:
            raise ValueError("this model's action tokens read the frame tokens: pass noisy_video")
        parts = [self._video_tokens(noisy_video, prefix.current)] if video_here else []
        parts.append(self.action_in(noisy_actions) + self.pos_action)
        n = self.n_ctx + self.n_vid + self.n_act
        rows = range(prefix.n, n) if video_here or prefix.n > self.n_ctx else range(n - self.n_act, n)
        m = prefix.keys.shape[1] - prefix.n  # VLM tokens
        x, _ = self._run(torch.cat(parts, 1), cond, (0, self.n_vid if video_here else 0, self.n_act), rows,
                         prefix.kv, prefix.keys[:, :m], range(prefix.n))
        vid = self._video_out(x[:, :self.n_vid], cond, prefix.current) if video_here else prefix.video_out
        return vid, self.action_out(x[:, -self.n_act:], cond[:, ACTION])


def build(cfg: ModelConfig) -> nn.Module:
    """The rows `lite`, `paligemma` and `smolvlm` of backbones.BACKBONES: the recipe picks the design."""
    cfg = cfg.resolved()
    if cfg.recipe == "hybrid-mot":
        from wam.models.mot import MoT

        return MoT(cfg)
    return VLA(cfg)
