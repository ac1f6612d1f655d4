"""`wam bench memory`: estimated GPU memory per rank for fine-tuning a Wan backbone of the real size, a π0-sized VLA
(PaliGemma-3B and a 300M action expert) and a hybrid with a Wan2.1-1.3B-sized video stream (VLA_SIZES).

Nothing here runs on a GPU or needs the real weights. The model is diffusers' `WanTransformer3DModel` at the
real checkpoint's config, with our adapter (models/wan.py), or transformers' `PaliGemmaForConditionalGeneration` at
PaliGemma-3B's config under our VLA or hybrid-mot (models/vla.py, models/mot.py), with LoRA layers (finetune.py), built
on fake tensors (shapes without storage), and one training step is traced on fake tensors too:

    weights      every parameter, float32 (divided over the ranks under FSDP)
    gradients    trained parameters, float32 (sharded under FSDP)
    AdamW        two float32 moments per trained parameter (sharded under FSDP)
    EMA          one float32 copy per trained parameter (sharded under FSDP)
    activations  the bytes autograd saves for the backward pass in that traced step, counted once per
                 storage (parameters themselves excluded): bf16 autocast on one GPU, bf16 parameters
                 under FSDP's mixed precision. With gradient checkpointing: each block's inputs, plus one
                 block's saved tensors while it is recomputed.
    gathered     FSDP only: the bf16 weights of two blocks (the current one and the prefetched next) and
                 of the unsharded rest (embeddings, heads)
    slack        1 GiB for the CUDA context and allocator fragmentation (an assumption, not a trace)

Every figure is an estimate (the attention kernels, the allocator and fused optimizers change the real
peak); docs/pretrained.md prints this table with the command that made it. The VAE and the text encoder
do not sit on the GPU during training: latents are cached per dataset and instructions embedded once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from wam.bench.common import SIZES

GIB = 1024**3
WAN_COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)


def wan_config(size: str) -> dict:
    """WanTransformer3DModel's config at a named size: what the sizes differ in comes from the latency bench's
    table of the released checkpoints (width, depth, heads, MLP hidden); the rest is common to them."""
    width, depth, heads, hidden = SIZES[size]
    return dict(WAN_COMMON, num_attention_heads=heads, attention_head_dim=width // heads, ffn_dim=hidden,
                num_layers=depth)


@dataclass(frozen=True)
class Setting:
    size: str
    finetune: str  # full | frozen | lora
    ranks: int  # 1: one GPU; > 1: FSDP over that many GPUs
    checkpointing: bool
    gpu_gib: float  # the GPU the row is asked about


ROWS = (
    Setting("wan2.1-1.3b", "full", 1, False, 24), Setting("wan2.1-1.3b", "full", 1, True, 24),
    Setting("wan2.1-1.3b", "lora", 1, False, 24), Setting("wan2.1-1.3b", "lora", 1, True, 24),
    Setting("wan2.1-1.3b", "frozen", 1, True, 24),
    Setting("wan2.1-14b", "lora", 8, False, 80), Setting("wan2.1-14b", "lora", 8, True, 80),
    Setting("wan2.1-14b", "full", 8, True, 80),
    Setting("pi0", "lora", 1, True, 24), Setting("pi0", "full", 1, True, 80), Setting("pi0", "full", 8, True, 80),
    Setting("hybrid-wan2.1-1.3b", "lora", 1, True, 80), Setting("hybrid-wan2.1-1.3b", "full", 1, True, 80),
    Setting("hybrid-wan2.1-1.3b", "full", 8, True, 80),
)


@dataclass(frozen=True)
class MemoryBenchConfig:
    out: Path = Path("runs/bench/memory")
    batch_size: int = 32
    """Samples per rank and step (the default preset trains with 32)."""
    image_size: int = 96
    """Camera frames, px (the default preset's); the VAE makes them 8x smaller."""
    lora_rank: int = 16
    sizes: str = "wan2.1-1.3b,wan2.1-14b,pi0,hybrid-wan2.1-1.3b"
    """Which backbone sizes of the table to estimate (wan2.1-1.3b, wan2.1-14b, pi0, hybrid-wan2.1-1.3b, tiny,
    tiny-vla)."""

    def __post_init__(self):
        if self.batch_size < 1 or self.image_size % 16:
            raise ValueError(f"need batch_size >= 1 and image_size a multiple of 16, got {self.batch_size}, {self.image_size}")
        unknown = set(self.sizes.split(",")) - set(SIZES) - set(VLA_SIZES)
        if unknown:
            raise ValueError(f"unknown sizes {sorted(unknown)}; known: {', '.join([*SIZES, *VLA_SIZES])}")


VLA_SIZES = {  # a VLM prefix (PaliGemma-3B: SigLIP So400m/14 at 224 px, Gemma-2B) and what reads it
    "pi0": "π0-sized VLA: PaliGemma-3B and a 300M action expert (width 1024, depth 18, as π0's Gemma-300M)",
    "hybrid-wan2.1-1.3b": "hybrid-mot: PaliGemma-3B prefix, a video stream of Wan2.1-1.3B's size (width 1536, depth 30, "
                          "12 heads, MLP 8960) and a width-1024 action stream",
    "tiny-vla": "a tiny PaliGemma and expert, for tests",
}


def paligemma_config(size: str) -> dict:
    """PaliGemma-3B-pt-224's config (SigLIP So400m/14, Gemma-2B), or a tiny one of the same classes."""
    if size == "tiny-vla":
        return dict(vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=8, vision_use_head=False),
                    text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=1, head_dim=8, vocab_size=64), projection_dim=16,
                    image_token_index=63)
    return dict(vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                   image_size=224, patch_size=14, vision_use_head=False),
                text_config=dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                                 num_key_value_heads=1, head_dim=256, vocab_size=257216), projection_dim=2048,
                image_token_index=257152)


def _wan_model(setting: Setting, cfg: MemoryBenchConfig):
    """Our Wan adapter on diffusers' WanTransformer3DModel at the size's config, with the inputs of one batch."""
    from wam.extras import require

    diffusers = require("diffusers", "wam bench memory")
    from wam.config import preset, with_backbone
    from wam.envs.metaworld import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM
    from wam.models.wan import WanWAM

    model_cfg = dataclasses.replace(with_backbone(preset("default"), "wan", "-").model, image_size=cfg.image_size)
    m = model_cfg.for_data(DEFAULT_CAMERAS, STATE_DIM, ACTION_DIM)  # the demo's shapes (Meta-World's)
    model = WanWAM(m, diffusers.WanTransformer3DModel(**wan_config(setting.size)))
    h = cfg.image_size // 8

    def inputs(b: int, dt: torch.dtype):
        from wam.models.base import Context

        z = model.backbone.config.in_channels
        context = Context(images=torch.zeros(b, m.context_frames, m.views, 3, 1, 1), state=torch.zeros(b, m.state_dim, dtype=dt),
                          text=torch.zeros(b, m.text_tokens, model.backbone.config.text_dim, dtype=dt),
                          latents=torch.zeros(b, m.context_frames, m.views, z, h, h, dtype=dt))
        return (torch.zeros(b, m.future_frames, m.views, z, h, h, dtype=dt),
                torch.zeros(b, m.action_horizon, m.action_dim, dtype=dt), context)

    tokens = (m.context_frames + m.future_frames) * (h // 2) * (m.views * h // 2) + 1 + m.action_horizon
    return model, inputs, tokens


def _vla_model(setting: Setting, cfg: MemoryBenchConfig):
    """Our VLA (models/vla.py) or hybrid-mot (models/mot.py) on transformers' PaliGemma at the size's config."""
    import transformers

    from wam.config import ModelConfig
    from wam.envs.metaworld import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM
    from wam.models.vla import VLA
    from wam.models.vlm.hf import TransformersVLM

    tiny = setting.size == "tiny-vla"
    pg = transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(**paligemma_config(setting.size)))
    hybrid = setting.size.startswith("hybrid")
    width, depth, heads, hidden = (32, 2, 2, 64) if tiny else SIZES["wan2.1-1.3b"] if hybrid else (1024, 18, 8, 4096)
    m = ModelConfig(backbone="paligemma", backbone_path="-", recipe="hybrid-mot" if hybrid else "vla",
                    image_size=cfg.image_size, width=width, depth=depth, heads=heads, mlp_ratio=hidden / width,
                    action_width=16 if tiny else 1024).for_data(DEFAULT_CAMERAS, STATE_DIM, ACTION_DIM).resolved()
    prefix = TransformersVLM(None, "paligemma", m.context_frames * m.views, model=pg)
    prefix.traced = True
    if hybrid:
        from wam.models.mot import MoT

        model = MoT(m, prefix)
    else:
        model = VLA(m, prefix)
    side = prefix.size
    n_text = 20  # an instruction's tokens, with <bos> and the newline

    def inputs(b: int, dt: torch.dtype):
        from wam.models.base import Context

        n = m.context_frames * m.views
        ids = torch.zeros(b, n * prefix.image_tokens + n_text, dtype=torch.long) + 1
        ids[:, :n * prefix.image_tokens] = pg.config.image_token_index
        context = Context(images=torch.zeros(b, m.context_frames, m.views, 3, side, side, dtype=dt),
                          state=torch.zeros(b, m.state_dim, dtype=dt), text=ids)
        video = torch.zeros(model.video_shape(b), dtype=dt) if m.future_frames else None
        return video, torch.zeros(b, m.action_horizon, m.action_dim, dtype=dt), context

    n = m.context_frames * m.views
    tokens = n * prefix.image_tokens + n_text + 1 + m.action_horizon + (model.n_vid if m.future_frames else 0)
    return model, inputs, tokens


def trace(setting: Setting, cfg: MemoryBenchConfig) -> dict:
    """Parameter counts and saved-activation bytes of one training step, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef

    from wam import finetune

    sharded = setting.ranks > 1
    with torch.device("meta"):  # shapes only; LoRA layers are inserted by peft as in a real run
        model, inputs, tokens = (_vla_model if setting.size in VLA_SIZES else _wan_model)(setting, cfg)
        finetune.apply(model, setting.finetune, cfg.lora_rank)
    mode = FakeTensorMode()
    with mode:
        for module in model.modules():  # meta -> fake CPU tensors (bf16 under FSDP's mixed precision)
            for name, p in module._parameters.items():
                if p is not None:
                    dtype = torch.bfloat16 if sharded else p.dtype
                    module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=dtype),
                                                                  requires_grad=p.requires_grad)
            for name, buf in module._buffers.items():
                if buf is not None:
                    module._buffers[name] = torch.empty(buf.shape, dtype=buf.dtype)
        blocks = [*getattr(model, "prefix_blocks", ()), *model.blocks]  # FSDP's units (fsdp.py)
        block_params = [sum(p.numel() for p in blk.parameters()) for blk in blocks]
        counts = {"params": sum(p.numel() for p in model.parameters()),
                  "trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "block_params": max(block_params),
                  "rest_params": sum(p.numel() for p in model.parameters()) - sum(block_params)}
        own = {StorageWeakRef(p.untyped_storage()) for p in model.parameters()}
        seen: set = set()
        saved_bytes, in_block = [0], [False]
        per_block: list[int] = []
        block_input = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            key = StorageWeakRef(t.untyped_storage())
            if key not in own and key not in seen:
                seen.add(key)
                n = t.untyped_storage().nbytes()
                saved_bytes[0] += n
                if in_block[0]:
                    per_block[-1] += n
            return t

        def enter(_, args, kwargs=None):
            in_block[0] = True
            per_block.append(0)
            first = args[0] if args else next(iter((kwargs or {}).values()))
            block_input[0] = max(block_input[0], first.untyped_storage().nbytes())  # what checkpointing keeps of a block

        def leave(*_):
            in_block[0] = False

        for block in blocks:
            block.register_forward_pre_hook(enter, with_kwargs=True)
            block.register_forward_hook(leave)
        dt = torch.bfloat16 if sharded else torch.float32  # FSDP casts the forward's inputs to bf16 too
        video, actions, context = inputs(cfg.batch_size, dt)
        t = torch.rand(cfg.batch_size, dtype=dt)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", torch.bfloat16, enabled=not sharded):
            model(video, actions, t, t, context)
    total, in_blocks = saved_bytes[0], sum(per_block)
    if setting.checkpointing:  # blocks keep only their inputs; one block's tensors come back when recomputed
        activations = total - in_blocks + len(blocks) * block_input[0] + max(per_block)
    else:
        activations = total
    return {**counts, "tokens": tokens, "activations": activations}


def estimate(setting: Setting, cfg: MemoryBenchConfig) -> dict:
    t = trace(setting, cfg)
    r = setting.ranks
    parts = {"weights": t["params"] * 4 / r, "gradients": t["trained"] * 4 / r, "adamw": t["trained"] * 8 / r,
             "ema": t["trained"] * 4 / r, "activations": t["activations"],
             "gathered": (2 * t["block_params"] + t["rest_params"]) * 2 if r > 1 else 0, "slack": GIB}
    total = sum(parts.values())
    return {**dataclasses.asdict(setting), "params": t["params"], "trained": t["trained"], "tokens": t["tokens"],
            **{k: v / GIB for k, v in parts.items()}, "total_gib": total / GIB, "fits": total <= setting.gpu_gib * GIB}


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [f"Estimated GPU memory per rank, GiB: batch {c['batch_size']} per rank, {c['image_size']} px frames "
             f"(the VLA rows: PaliGemma's 224 px), bf16, AdamW + EMA, LoRA rank {c['lora_rank']}. Every figure is an "
             f"estimate from a traced step on fake tensors, not a measurement.", "",
             "| model | fine-tune | GPUs | grad. ckpt | tokens | trained params | weights | grads + AdamW + EMA "
             "| activations | gathered | total | fits? |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        gpus = f"1 x {r['gpu_gib']:.0f} GB" if r["ranks"] == 1 else f"{r['ranks']} x {r['gpu_gib']:.0f} GB (FSDP)"
        state = r["gradients"] + r["adamw"] + r["ema"]
        lines.append(f"| {r['size']} | {r['finetune']} | {gpus} | {'on' if r['checkpointing'] else 'off'} | {r['tokens']} "
                     f"| {r['trained'] / 1e6:,.1f}M of {r['params'] / 1e6:,.0f}M | {r['weights']:.1f} | {state:.1f} "
                     f"| {r['activations']:.1f} | {r['gathered']:.1f} | **{r['total_gib']:.1f}** "
                     f"| {'yes' if r['fits'] else 'no'} (est.) |")
    lines += ["", *[f"- {k}: {v}" for k, v in VLA_SIZES.items() if any(r["size"] == k for r in result["rows"])]]
    return "\n".join(lines) + "\n"


def bench_memory(cfg: MemoryBenchConfig) -> dict:
    from tqdm import tqdm

    from wam.config import to_dict

    sizes = cfg.sizes.split(",")
    rows = [s for s in ROWS if s.size in sizes]
    if "tiny" in sizes:
        rows += [Setting("tiny", "lora", 1, True, 24), Setting("tiny", "full", 2, False, 80)]
    if "tiny-vla" in sizes:
        rows += [Setting("tiny-vla", "lora", 1, True, 24), Setting("tiny-vla", "full", 2, False, 80)]
    result = {"config": to_dict(cfg), "rows": [estimate(s, cfg) for s in tqdm(rows, desc="memory", unit="row")]}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=2))
    (out / "memory.md").write_text(markdown(result))
    print("\n" + markdown(result))
    return result
