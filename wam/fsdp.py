"""Fully sharded data parallel (FSDP2) for `torchrun ... wam train --train.parallel fsdp`.

    shard        `fully_shard` on every transformer block, then on the whole model: a rank keeps 1/N of each
                 weight, gradient and AdamW moment, and gathers one block's weights at a time in the forward
                 and backward passes. With precision bfloat16 the gathered weights and the compute are bf16,
                 while the sharded master weights, the gradient reduction and AdamW stay float32.
    save / load  the sharded training state (trainable weights, their EMA, AdamW) through
                 torch.distributed.checkpoint: each rank writes its own shards to CKPT/train_state/, and any
                 world size can read them back. The consolidated EMA weights go to CKPT/model.safetensors,
                 the same file a single-process run writes, which `wam eval` and the policy server read.

Frozen weights (a frozen or LoRA fine-tune of a pretrained backbone) are never saved: they are re-read from
the backbone folder. The training loop stays the one in train.py; it calls these four functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

TRAINABLE = StateDictOptions(ignore_frozen_params=True)


def shard(model: nn.Module, precision: str = "float32") -> nn.Module:
    """Shard `model` in place over the default process group (call after fine-tuning layers are added)."""
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if precision == "bfloat16" else MixedPrecisionPolicy())
    # The networks return views (reshapes) of their outputs; the loss (flow.losses) never changes them in place,
    # which is what FSDP2's warning about views is for.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    # every network names its repeated blocks `blocks`; a VLA's VLM layers (`prefix_blocks`) are units of their own
    for block in [*getattr(model, "prefix_blocks", ()), *model.blocks]:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)  # the rest: embeddings, heads, norms
    return model


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every rank must call it); other tensors as they are."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict[str, torch.Tensor]) -> None:
    """Every rank writes its shards of the trainable weights, EMA and AdamW state under PATH (collective)."""
    weights, optim = get_state_dict(model, optimizer, options=TRAINABLE)
    dcp.save({"model": weights, "optim": optim, "ema": ema}, checkpoint_id=Path(path))


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict[str, torch.Tensor]) -> None:
    """Read what `save` wrote into the sharded model, optimizer and EMA, in place (collective)."""
    weights, optim = get_state_dict(model, optimizer, options=TRAINABLE)
    state = {"model": weights, "optim": optim, "ema": ema}
    dcp.load(state, checkpoint_id=Path(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=StateDictOptions(ignore_frozen_params=True, strict=False))
