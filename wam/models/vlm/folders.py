"""Vision-language models from a transformers folder the user downloaded (nothing is downloaded here).

    DIR/config.json                    architectures: PaliGemmaForConditionalGeneration (π0's VLM) |
                                       SmolVLMForConditionalGeneration or Idefics3ForConditionalGeneration (SmolVLA's)
    DIR/model.safetensors[.index.json] the weights
    DIR/tokenizer.json | tokenizer.model the tokenizer
    DIR/preprocessor_config.json | processor_config.json   the image processor's settings (size, mean, std)

For example `hf download google/paligemma-3b-pt-224 --local-dir DIR` or `hf download
HuggingFaceTB/SmolVLM2-500M-Video-Instruct --local-dir DIR`. `load(DIR, kind)` checks the layout, then reads the
model with its transformers class's own `from_pretrained(DIR)` and the tokenizer with `AutoTokenizer`; a folder that
is not such a model fails with the file and what was expected. `save_tiny(DIR, kind)` writes tiny random configs of
the same classes in the same layout, so the tests load them through exactly the code path real weights take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

KINDS = {  # kind -> the model classes its config.json may declare (the first is the one loaded)
    "paligemma": ("PaliGemmaForConditionalGeneration",),
    "smolvlm": ("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration"),
}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
DOWNLOAD = {"paligemma": "google/paligemma-3b-pt-224", "smolvlm": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"}


class LayoutError(ValueError):
    """The folder is not the transformers model a VLM backbone needs."""


def check_layout(root: str | Path, kind: str) -> str:
    """Check DIR against the layout of `kind`; returns the class its config.json declares."""
    if kind not in KINDS:
        raise ValueError(f"unknown vision-language backbone {kind!r}; expected one of {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder (expected a {kind} model folder downloaded beforehand, e.g. with "
                          f"`hf download {DOWNLOAD[kind]} --local-dir {root}`)")
    config = root / "config.json"
    if not config.is_file():
        raise LayoutError(f"{config} is missing: {root} is not a transformers model folder (expected config.json "
                          f"declaring {' or '.join(KINDS[kind])})")
    try:
        declared = (json.loads(config.read_text()).get("architectures") or [None])[0]
    except json.JSONDecodeError as e:
        raise LayoutError(f"{config} is not valid JSON ({e})") from None
    if declared not in KINDS[kind]:
        raise LayoutError(f"{config} declares {declared!r}; a {kind!r} backbone expects {' or '.join(KINDS[kind])}")
    if not any((root / w).is_file() for w in WEIGHTS):
        raise LayoutError(f"{root} holds no weights: expected one of {', '.join(WEIGHTS)}")
    if not any((root / f).is_file() for f in TOKENIZER_FILES):
        raise LayoutError(f"{root} has none of {', '.join(TOKENIZER_FILES)}: the tokenizer files are missing")
    if not any((root / f).is_file() for f in PROCESSOR_FILES):
        raise LayoutError(f"{root} has none of {', '.join(PROCESSOR_FILES)}: the image processor's settings are missing")
    return declared


@dataclass
class Components:
    model: torch.nn.Module
    """The ...ForConditionalGeneration model (its `.model` is the VLM without the language-model head)."""
    tokenizer: object
    image: dict
    """The image processor's settings: size (px), image_mean, image_std."""


def image_settings(root: Path) -> dict:
    """size / mean / std of the image processor, from whichever processor file the folder has."""
    for name in PROCESSOR_FILES:
        f = root / name
        if f.is_file():
            d = json.loads(f.read_text())
            d = d.get("image_processor", d)
            if "image_mean" in d:
                return {"mean": list(d["image_mean"]), "std": list(d["image_std"])}
    raise LayoutError(f"{root}: no image_mean / image_std in {' or '.join(PROCESSOR_FILES)}")


def load(root: str | Path, kind: str, dtype: torch.dtype = torch.float32) -> Components:
    """The model, tokenizer and image settings of a VLM folder, through transformers' own from_pretrained."""
    import transformers

    declared = check_layout(root, kind)
    root = Path(root)
    cls = getattr(transformers, declared)
    try:
        model = cls.from_pretrained(str(root), dtype=dtype)
    except (RuntimeError, ValueError, OSError) as e:  # shape mismatches, unreadable files
        raise LayoutError(f"{root}: the weights do not load into {declared} with its config.json "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(root))
    return Components(model=model, tokenizer=tokenizer, image=image_settings(root))


def fingerprint(root: str | Path) -> str:
    """Identity of the folder's weights (config, weight files' names, sizes, first and last MiB): checkpoints of
    frozen or LoRA fine-tunes leave the pretrained weights in this folder and record it."""
    from wam.models.folders import fingerprint as diffusers_fingerprint

    return diffusers_fingerprint(root, part=".")


# ============================================================================ tiny random folders
TINY_WORDS = ("press the button from top close drawer reach goal to a put on open push pick place "
              "with gripper red green blue window door").split()


def save_tiny(root: str | Path, kind: str, seed: int = 0, image_size: int = 32) -> Path:
    """A folder of `kind` with a tiny random config of the real class, its tokenizer and image processor
    settings (for tests and dry runs): 2 language layers, width 16, 8-px patches."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if kind not in KINDS:
        raise ValueError(f"unknown vision-language backbone {kind!r}; expected one of {', '.join(KINDS)}")
    root = Path(root)
    torch.manual_seed(seed)
    if kind == "paligemma":
        special = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
        extra = dict(bos_token="<bos>", eos_token="<eos>", additional_special_tokens=["<image>"])
    else:
        special = ["<pad>", "<|im_end|>", "<|im_start|>", "<unk>", "<image>", "<fake_token_around_image>",
                   "<global-img>", "<end_of_utterance>"]
        extra = dict(bos_token="<|im_start|>", eos_token="<|im_end|>", extra_special_tokens={
            "image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"})
    vocab = {t: i for i, t in enumerate(special + TINY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", **extra)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=8, vocab_size=len(vocab), pad_token_id=0)
    mean_std = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if kind == "paligemma":
        model = transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(
            vision_config=vision, text_config=text, image_token_index=vocab["<image>"], projection_dim=16, pad_token_id=0))
        processor = transformers.SiglipImageProcessor(size={"height": image_size, "width": image_size}, **mean_std)
    else:
        model = transformers.SmolVLMForConditionalGeneration(transformers.SmolVLMConfig(
            vision_config=vision, text_config=text, image_token_id=vocab["<image>"], scale_factor=2, pad_token_id=0))
        processor = transformers.SmolVLMImageProcessor(do_image_splitting=False, size={"longest_edge": image_size},
                                                       max_image_size={"longest_edge": image_size}, **mean_std)
    processor.image_seq_length = (image_size // 8) ** 2 // (1 if kind == "paligemma" else 4)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    processor.save_pretrained(root)
    return root
