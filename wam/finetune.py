"""What a fine-tuning run trains: all weights, only the action stream, or LoRA adapters on the backbone.

    full     every weight
    frozen   the pretrained backbone frozen; the adapter's own modules (action and state embeddings, action
             head) train
    lora     LoRA (peft, through diffusers' or transformers' own `add_adapter`) on the backbone's attention
             projections (a VLM's: its language model's and vision tower's), plus the adapter's own modules
Our own transformer has no pretrained part: it trains in full. Gradient checkpointing recomputes each
backbone block in the backward pass (less activation memory for about a third more compute).
"""

from __future__ import annotations

from torch import nn

MODES = ("full", "frozen", "lora")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def apply(model: nn.Module, mode: str, rank: int = 16, alpha: int | None = None,
          gradient_checkpointing: bool = False) -> nn.Module:
    """Set requires_grad (and insert LoRA layers) in place; returns the model."""
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; expected one of {', '.join(MODES)}")
    if not model.capabilities.pretrained:
        if mode != "full":
            raise ValueError(f"--train.finetune {mode} needs a pretrained backbone (--backbone wan|cosmos|paligemma|smolvlm)")
        return model
    backbone = model.backbone
    if mode == "frozen":
        backbone.requires_grad_(False)
    elif mode == "lora":
        from wam.extras import require

        peft = require("peft", "--train.finetune lora")

        backbone.requires_grad_(False)
        config = peft.LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=True,
                                 target_modules=getattr(model, "lora_targets", LORA_TARGETS))
        if hasattr(model, "lora_targets"):  # a transformers VLM: peft's own injection (any module)
            peft.inject_adapter_in_model(config, backbone)
        else:  # a diffusers transformer: its own add_adapter
            backbone.add_adapter(config)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--train.finetune {mode}: nothing left to train ({type(model).__name__} has no modules "
                         "outside the backbone; the cosmos-policy recipe writes actions into the backbone's own "
                         "latent frames): use full or lora")
    if gradient_checkpointing:
        model.gradient_checkpointing = True
    return model


def trainable(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}
