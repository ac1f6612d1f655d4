"""`wam bench memory`: estimated GPU memory per rank for fine-tuning a Wan backbone of the real size.

Nothing here runs on a GPU or needs the real weights. The model is diffusers' `WanTransformer3DModel` at the
real checkpoint's config, with our adapter (models/wan.py) and LoRA layers (finetune.py), built on fake tensors
(shapes without storage), and one training step is traced on fake tensors too:

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
)


@dataclass(frozen=True)
class MemoryBenchConfig:
    out: Path = Path("runs/bench/memory")
    batch_size: int = 32
    """Samples per rank and step (the default preset trains with 32)."""
    image_size: int = 96
    """Camera frames, px (the default preset's); the VAE makes them 8x smaller."""
    lora_rank: int = 16
    sizes: str = "wan2.1-1.3b,wan2.1-14b"
    """Which backbone sizes of the table to estimate (wan2.1-1.3b, wan2.1-14b, tiny)."""

    def __post_init__(self):
        if self.batch_size < 1 or self.image_size % 16:
            raise ValueError(f"need batch_size >= 1 and image_size a multiple of 16, got {self.batch_size}, {self.image_size}")
        unknown = set(self.sizes.split(",")) - set(SIZES)
        if unknown:
            raise ValueError(f"unknown sizes {sorted(unknown)}; known: {', '.join(SIZES)}")


def trace(setting: Setting, cfg: MemoryBenchConfig) -> dict:
    """Parameter counts and saved-activation bytes of one training step, on fake tensors."""
    from wam.extras import require

    diffusers = require("diffusers", "wam bench memory")
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef

    from wam import finetune
    from wam.config import preset, with_backbone
    from wam.models.base import Context
    from wam.envs.metaworld import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM
    from wam.models.wan import WanWAM

    model_cfg = dataclasses.replace(with_backbone(preset("default"), "wan", "-").model, image_size=cfg.image_size)
    model_cfg = model_cfg.for_data(DEFAULT_CAMERAS, STATE_DIM, ACTION_DIM)  # the demo's shapes (Meta-World's)
    sharded = setting.ranks > 1
    with torch.device("meta"):  # shapes only; LoRA layers are inserted by peft as in a real run
        model = WanWAM(model_cfg, diffusers.WanTransformer3DModel(**wan_config(setting.size)))
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
        transformer = model.backbone
        blocks = model.blocks
        counts = {"params": sum(p.numel() for p in model.parameters()),
                  "trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "block_params": sum(p.numel() for p in blocks[0].parameters()),
                  "rest_params": sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in blocks.parameters())}
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

        def enter(_, args):
            in_block[0] = True
            per_block.append(0)
            block_input[0] = args[0].untyped_storage().nbytes()  # what checkpointing keeps of a block

        def leave(*_):
            in_block[0] = False

        for block in blocks:
            block.register_forward_pre_hook(enter)
            block.register_forward_hook(leave)
        b, h, m = cfg.batch_size, cfg.image_size // 8, model_cfg
        z = transformer.config.in_channels
        dt = torch.bfloat16 if sharded else torch.float32  # FSDP casts the forward's inputs to bf16 too
        context = Context(images=torch.zeros(b, m.context_frames, m.views, 3, 1, 1), state=torch.zeros(b, m.state_dim, dtype=dt),
                          text=torch.zeros(b, m.text_tokens, transformer.config.text_dim, dtype=dt),
                          latents=torch.zeros(b, m.context_frames, m.views, z, h, h, dtype=dt))
        video = torch.zeros(b, m.future_frames, m.views, z, h, h, dtype=dt)
        actions = torch.zeros(b, m.action_horizon, m.action_dim, dtype=dt)
        t = torch.rand(b, dtype=dt)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", torch.bfloat16, enabled=not sharded):
            model(video, actions, t, t, context)
        tokens = (m.context_frames + m.future_frames) * (h // 2) * (m.views * h // 2) + 1 + m.action_horizon
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
             f"({result['rows'][0]['tokens']} tokens per sample), bf16, AdamW + EMA, LoRA rank {c['lora_rank']}.", "",
             "| backbone | fine-tune | GPUs | grad. ckpt | trained params | weights | grads + AdamW + EMA | activations "
             "| gathered | total | fits? |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        gpus = f"1 x {r['gpu_gib']:.0f} GB" if r["ranks"] == 1 else f"{r['ranks']} x {r['gpu_gib']:.0f} GB (FSDP)"
        state = r["gradients"] + r["adamw"] + r["ema"]
        lines.append(f"| {r['size']} | {r['finetune']} | {gpus} | {'on' if r['checkpointing'] else 'off'} "
                     f"| {r['trained'] / 1e6:,.1f}M of {r['params'] / 1e6:,.0f}M | {r['weights']:.1f} | {state:.1f} "
                     f"| {r['activations']:.1f} | {r['gathered']:.1f} | **{r['total_gib']:.1f}** "
                     f"| {'yes' if r['fits'] else 'no'} (est.) |")
    return "\n".join(lines) + "\n"


def bench_memory(cfg: MemoryBenchConfig) -> dict:
    from tqdm import tqdm

    from wam.config import to_dict

    sizes = cfg.sizes.split(",")
    rows = [s for s in ROWS if s.size in sizes]
    if "tiny" in sizes:
        rows += [Setting("tiny", "lora", 1, True, 24), Setting("tiny", "full", 2, False, 80)]
    result = {"config": to_dict(cfg), "rows": [estimate(s, cfg) for s in tqdm(rows, desc="memory", unit="row")]}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=2))
    (out / "memory.md").write_text(markdown(result))
    print("\n" + markdown(result))
    return result
