"""Pretrained video backbones from a diffusers pipeline folder the user downloaded (nothing is downloaded here).

    DIR/model_index.json                 names the pipeline and its components
    DIR/transformer/  config.json + *.safetensors     WanTransformer3DModel | CosmosTransformer3DModel
    DIR/vae/          config.json + *.safetensors     AutoencoderKLWan (Wan 2.1 and Cosmos-Predict2 share it)
    DIR/text_encoder/ config.json + *.safetensors     UMT5EncoderModel (Wan) | T5EncoderModel (Cosmos)
    DIR/tokenizer/    tokenizer files

`load(DIR, kind)` reads it with the libraries' own `from_pretrained(DIR, subfolder=...)`, after checking the
layout and that the parts agree, so a wrong folder fails with the file and what was expected instead of deep in
a forward pass. `wam.testing.save_tiny(DIR, kind)` writes tiny random configs of the same classes in the same
layout: the tests load them through exactly the code path real weights take. `fingerprint` identifies the
weights of a folder, for checkpoints that leave frozen weights in it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

KINDS = {  # what each backbone's folder must hold: component -> accepted class names
    "wan": {"transformer": ("WanTransformer3DModel",), "vae": ("AutoencoderKLWan",),
            "text_encoder": ("UMT5EncoderModel",), "tokenizer": None},
    "cosmos": {"transformer": ("CosmosTransformer3DModel",), "vae": ("AutoencoderKLWan",),
               "text_encoder": ("T5EncoderModel",), "tokenizer": None},
}
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
           "model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model")


class LayoutError(ValueError):
    """The folder is not the diffusers pipeline layout a backbone needs."""


def check_layout(root: str | Path, kind: str, parts: tuple[str, ...] | None = None) -> dict:
    """Check DIR against the layout of `kind` (only `parts` of it, when given); returns model_index.json."""
    if kind not in KINDS:
        raise ValueError(f"unknown backbone {kind!r}; expected one of {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder (expected a diffusers pipeline folder for {kind!r}, downloaded "
                          f"beforehand, e.g. with `hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir {root}`)")
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise LayoutError(f"{index_file} is missing: {root} is not a diffusers pipeline folder (expected "
                          f"model_index.json with {', '.join(KINDS[kind])} subfolders)")
    index = json.loads(index_file.read_text())
    for part, classes in KINDS[kind].items():
        if parts is not None and part not in parts:
            continue
        folder = root / part
        if not folder.is_dir():
            raise LayoutError(f"{folder} is missing: a {kind!r} backbone needs {part}/ "
                              + (f"({' or '.join(classes)})" if classes else "(tokenizer files)"))
        if classes is None:
            if not any((folder / f).is_file() for f in TOKENIZER_FILES):
                raise LayoutError(f"{folder} has none of {', '.join(TOKENIZER_FILES)}: the tokenizer files are missing")
            continue
        config = folder / "config.json"
        if not config.is_file():
            raise LayoutError(f"{config} is missing (expected the {' or '.join(classes)} config)")
        declared = json.loads(config.read_text()).get("_class_name") or (json.loads(config.read_text()).get("architectures") or [None])[0]
        if declared not in classes:
            raise LayoutError(f"{config} declares {declared!r}; a {kind!r} backbone expects {' or '.join(classes)}")
        if not any((folder / w).is_file() for w in WEIGHTS):
            raise LayoutError(f"{folder} holds no weights: expected one of {', '.join(WEIGHTS)}")
    return index


@dataclass
class Components:
    transformer: torch.nn.Module
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module | None
    tokenizer: object | None


def load(root: str | Path, kind: str, parts: tuple[str, ...] = ("transformer", "vae", "text_encoder", "tokenizer"),
         dtype: torch.dtype = torch.float32) -> Components:
    """The pretrained components of a diffusers folder, through the libraries' own from_pretrained."""
    import transformers

    from wam.extras import require

    diffusers = require("diffusers", f"a pretrained {kind!r} backbone")

    check_layout(root, kind, parts)
    root = str(root)
    got: dict = {}
    for part in parts:
        if part == "tokenizer":
            got[part] = transformers.AutoTokenizer.from_pretrained(root, subfolder="tokenizer")
            continue
        cls_name = KINDS[kind][part][0]
        cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name)
        try:
            got[part] = cls.from_pretrained(root, subfolder=part, torch_dtype=dtype)
        except (RuntimeError, ValueError, OSError) as e:  # shape mismatches, unreadable files
            raise LayoutError(f"{Path(root) / part}: the weights do not load into {cls_name} with its config.json "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    comp = Components(transformer=got.get("transformer"), vae=got.get("vae"), text_encoder=got.get("text_encoder"),
                      tokenizer=got.get("tokenizer"))
    if comp.transformer is not None and comp.text_encoder is not None:
        text_dim = comp.transformer.config.get("text_dim", comp.transformer.config.get("text_embed_dim"))
        if comp.transformer.config.get("use_crossattn_projection"):
            text_dim = comp.transformer.config["crossattn_proj_in_channels"]
        if comp.text_encoder.config.d_model != text_dim:
            raise LayoutError(f"{Path(root) / 'text_encoder/config.json'}: d_model {comp.text_encoder.config.d_model} "
                              f"does not match the transformer's text width {text_dim} ({Path(root) / 'transformer/config.json'})")
    if comp.transformer is not None and comp.vae is not None:
        z = comp.vae.config.z_dim
        want = comp.transformer.config.in_channels - (1 if kind == "cosmos" else 0)
        if z != want:
            raise LayoutError(f"{Path(root) / 'vae/config.json'}: z_dim {z} does not match the transformer's latent "
                              f"channels {want} ({Path(root) / 'transformer/config.json'})")
    return comp


# ============================================================================ text and frames
def fingerprint_of(kind: str, root: str | Path) -> str:
    """The fingerprint of a backbone folder of `kind`: a diffusers pipeline's transformer, or a transformers VLM."""
    from wam.models.vlm import folders as vlm

    return vlm.fingerprint(root) if kind in vlm.KINDS else fingerprint(root)


def fingerprint(root: str | Path, part: str = "transformer") -> str:
    """A cheap identity of a component's weights: its config, the names and sizes of its weight files, and their
    first and last MiB (the safetensors header and data at both ends). Checkpoints of frozen or LoRA
    fine-tunes record it, since they leave the frozen weights in this folder rather than copy them."""
    folder = Path(root) / part
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("*.safetensors")):
        size = f.stat().st_size
        with f.open("rb") as fh:
            head = fh.read(1 << 20)
            fh.seek(max(0, size - (1 << 20)))
            tail = fh.read()
        h.update(f"{f.name}:{size}".encode() + head + tail)
    return h.hexdigest()[:16]


