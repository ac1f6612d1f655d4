"""Pretrained video backbones from a diffusers pipeline folder the user downloaded (nothing is downloaded here).

    DIR/model_index.json                 names the pipeline and its components
    DIR/transformer/  config.json + *.safetensors     WanTransformer3DModel | CosmosTransformer3DModel
    DIR/vae/          config.json + *.safetensors     AutoencoderKLWan (Wan 2.1 and Cosmos-Predict2 share it)
    DIR/text_encoder/ config.json + *.safetensors     UMT5EncoderModel (Wan) | T5EncoderModel (Cosmos)
    DIR/tokenizer/    tokenizer files

`load(DIR, kind)` reads it with the libraries' own `from_pretrained(DIR, subfolder=...)`, after checking the
layout and that the parts agree, so a wrong folder fails with the file and what was expected instead of deep in
a forward pass. `save_tiny(DIR, kind)` writes tiny random configs of the same classes in the same layout: the
tests load them through exactly the code path real weights take.

`TextEncoder` turns instructions into the per-token embeddings the transformer cross-attends to (computed once
per instruction); `FrameCodec` encodes frames to normalised VAE latents and decodes them back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

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
    import diffusers
    import transformers

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


class TextEncoder:
    """Instructions -> (n, tokens, d) embeddings as the pipelines make them: padded to `tokens`, with the
    positions after each instruction's end set to zero."""

    def __init__(self, tokenizer, encoder: torch.nn.Module, tokens: int):
        self.tokenizer, self.encoder, self.tokens = tokenizer, encoder.eval().requires_grad_(False), tokens

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding="max_length", max_length=self.tokens, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        mask = enc.attention_mask.to(device)
        out = self.encoder(input_ids=enc.input_ids.to(device), attention_mask=mask).last_hidden_state
        return (out * mask[..., None]).float().cpu()


def vae_downsampling(config) -> int:
    """Spatial compression of an AutoencoderKLWan: 2 per stage after the first, times its pixel patchify (the
    Wan 2.2 VAE folds 2x2 pixels into channels first: 16x in all; Wan 2.1's and Cosmos's: 8x)."""
    return 2 ** (len(config["dim_mult"]) - 1) * (config.get("patch_size") or 1)


class FrameCodec:
    """Frames <-> normalised latents of a Wan VAE, one frame at a time (each frame its own 1-frame clip, so a
    dataset's latents are computed once per frame and any window can be assembled from them)."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae.eval().requires_grad_(False)
        self.z = vae.config.z_dim
        self.down = vae_downsampling(vae.config)
        self.mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std, dtype=torch.float32).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] -> (n, z, H/down, W/down), normalised as the pipelines do (mean 0, std 1)."""
        device, dtype = self.vae.device, self.vae.dtype
        mu = self.vae.encode(images[:, :, None].to(device, dtype)).latent_dist.mean[:, :, 0].float().cpu()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, z, h, w) normalised latents -> (n, 3, down*h, down*w) in [-1, 1]."""
        x = latents.float().cpu() * self.std + self.mean
        out = self.vae.decode(x[:, :, None].to(self.vae.device, self.vae.dtype)).sample[:, :, 0]
        return out.float().cpu().clamp(-1, 1)


class LatentAdapter(torch.nn.Module):
    """What the Wan and Cosmos adapters share: the backbone, its frozen helpers (not part of the weights) and the
    frame and text side of the protocol. Frames are VAE latents (b, n, v, z, h, w); the first
    `cfg.future_frames` latent frames of a prediction are the future frames."""

    def __init__(self, cfg, transformer: torch.nn.Module, codec: FrameCodec | None, text_encoder: TextEncoder | None):
        super().__init__()
        self.cfg, self.backbone = cfg, transformer
        self.codec, self.text_encoder = codec, text_encoder
        self.gradient_checkpointing = False
        self.latent_size = cfg.image_size // (codec.down if codec is not None else 8)  # h = w of a latent frame
        self.patch = tuple(transformer.config.patch_size)

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The backbone's repeated transformer blocks (the unit of gradient checkpointing, sharding, compiling)."""
        raise NotImplementedError

    def run_block(self, block: torch.nn.Module, *args) -> torch.Tensor:
        """One backbone block; with gradient checkpointing it is recomputed in the backward pass."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def context_latents(self, context) -> torch.Tensor:
        """The context's VAE latents: cached ones (training) or the frames encoded now."""
        return context.latents if context.latents is not None else self.encode_frames(context.images)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            raise RuntimeError("this model was built without its text encoder")
        return self.text_encoder(texts)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(b, n, v, 3, H, W) in [-1, 1] -> latents (b, n, v, z, h, w)."""
        if self.codec is None:
            raise RuntimeError("this model was built without its VAE")
        b, n, v = images.shape[:3]
        lat = self.codec.encode(images.flatten(0, 2).float().cpu()).to(images.device)
        return lat.reshape(b, n, v, *lat.shape[1:])

    def decode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Predicted latents (b, >= f, v, z, h, w) -> the future frames (b, f, v, 3, H, W) in [-1, 1]."""
        b, f, v, s = video.shape[0], self.cfg.future_frames, video.shape[2], self.cfg.image_size
        return self.codec.decode(video[:, :f].flatten(0, 2)).reshape(b, f, v, 3, s, s)


# ============================================================================ tiny random folders for tests
TINY_WORDS = ("press the button from top close drawer reach goal to a put on open push pick place "
              "with gripper red green blue").split()


def save_tiny(root: str | Path, kind: str, seed: int = 0, vae: str = "2.1") -> Path:
    """A diffusers folder of `kind` with tiny random configs of the real classes (for tests and dry runs).
    vae "2.2": the Wan 2.2 VAE's structure (residual, 2x2 pixel patchify first: 16x smaller frames)."""
    import diffusers
    import transformers
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
