"""A transformers vision-language model as the prefix of a VLA: PaliGemma (π0's) or SmolVLM (SmolVLA's).

The model is not forked: its own forward runs on the prompt its own processor would build, and the prefix is its
hidden states (every layer's, so the action expert can read selected layers):

    prompt   PaliGemma: <image> x (images x image_seq_length), <bos>, instruction, "\\n" (the processor's
             `build_string_from_input`); SmolVLM: per image <fake_token_around_image><global-img><image> x
             image_seq_len <fake_token_around_image> (its processor's prompt for an image it does not split), then
             the instruction. Tokenised once per instruction by the folder's tokenizer; `Context.text` holds the
             token ids (as floats), right-padded with the pad token, which the attention masks out.
    images   every camera (and context frame) is one image: resized to the vision tower's size, normalised with the
             image processor's mean and std, in torch (batched, on the model's device).
    forward  PaliGemmaModel / SmolVLMModel on (input_ids, pixel_values, attention_mask) with
             output_hidden_states; PaliGemma's prefix attends bidirectionally (token_type_ids 0), as in π0.

`hidden(images, text)` returns the hidden states (embeddings, then each layer's output) and which positions are
real tokens. The test compares them with the ...ForConditionalGeneration forward on the processor's own outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wam.models.vlm.folders import Components, load

LORA_TARGETS = {  # attention projections of the language model and the vision tower
    "paligemma": ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj"],
    "smolvlm": ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj"],
}


class TransformersVLM(nn.Module):
    def __init__(self, root: str | None, kind: str, images: int, model: nn.Module | None = None):
        """The VLM of the folder `root`; or, with `model` (a ...ForConditionalGeneration built from a config, e.g. on
        the meta device for `wam bench memory`), that model without a tokenizer (token ids are then given)."""
        super().__init__()
        if model is None:
            comp = load(root, kind)
        else:
            comp = Components(model=model, tokenizer=None, image={"mean": [0.5] * 3, "std": [0.5] * 3})
        self.kind, self.images = kind, images
        self.model = comp.model.model  # the VLM without its language-model head
        tower = getattr(self.model.vision_tower, "vision_model", self.model.vision_tower) if kind == "paligemma" else None
        if getattr(tower, "use_head", False):  # SigLIP's pooling head: PaliGemma reads the patch states, never the pool
            tower.use_head = False
            del tower.head
        self.tokenizer = comp.tokenizer
        if kind == "paligemma" and root is not None:
            import transformers

            self.processor = transformers.AutoProcessor.from_pretrained(root)
        config = comp.model.config
        self.pad = 0 if self.tokenizer is None or self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id
        self.size = config.vision_config.image_size
        self.register_buffer("mean", torch.tensor(comp.image["mean"]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(comp.image["std"]).reshape(1, 3, 1, 1), persistent=False)
        text = config.text_config
        self.width = text.hidden_size
        self.layers = text.num_hidden_layers
        if kind == "paligemma":
            self.image_tokens = config.text_config.num_image_tokens if hasattr(text, "num_image_tokens") else \
                (self.size // config.vision_config.patch_size) ** 2
        else:
            self.image_tokens = (self.size // config.vision_config.patch_size) ** 2 // config.scale_factor**2
        self.lora_targets = LORA_TARGETS[kind]
        self._ids: dict[str, list[int]] = {}
        self.traced = False
        """PaliGemma's prefix with its images first and no padding, merged by position: only for tracing shapes."""

    @property
    def blocks(self) -> list[nn.Module]:
        """The vision encoder's and the language model's layers (the units of sharding and checkpointing)."""
        if self.kind == "paligemma":
            tower = getattr(self.model.vision_tower, "vision_model", self.model.vision_tower)
            return [*tower.encoder.layers, *self.model.language_model.layers]
        return [*self.model.vision_model.encoder.layers, *self.model.text_model.layers]

    # ------------------------------------------------------------------ text
    def prompt(self, instruction: str) -> str:
        """SmolVLM: the prompt its processor builds for `self.images` unsplit images and the instruction (its
        processor itself cannot be built without torchvision, for its video processor; its prompt function can)."""
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        tok = self.tokenizer
        one = get_image_prompt_string(0, 0, self.image_tokens, getattr(tok, "fake_image_token", "<fake_token_around_image>"),
                                      getattr(tok, "image_token", "<image>"), getattr(tok, "global_image_token", "<global-img>"))
        return one * self.images + instruction

    def token_ids(self, instruction: str) -> list[int]:
        if instruction not in self._ids:
            if self.kind == "paligemma":  # PaliGemma's own processor, on blank images of the right count
                from PIL import Image

                blank = [Image.new("RGB", (self.size, self.size))] * self.images
                self._ids[instruction] = self.processor(text=["<image>" * self.images + instruction], images=[blank])["input_ids"][0]
            else:
                self._ids[instruction] = self.tokenizer(self.prompt(instruction))["input_ids"]
        return list(self._ids[instruction])

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Instructions -> (n, tokens) token ids of their prompts (int64, which mixed precision never casts: bf16 holds
        whole numbers exactly only up to 256), right-padded with the pad token."""
        ids = [self.token_ids(t) for t in texts]
        n = max((len(i) for i in ids), default=1)
        return torch.tensor([i + [self.pad] * (n - len(i)) for i in ids], dtype=torch.long)

    # ------------------------------------------------------------------ the prefix
    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(b, n, 3, H, W) in [-1, 1] -> (b, n, 3, S, S) as the image processor normalises them."""
        b, n = images.shape[:2]
        x = (images.flatten(0, 1).float() + 1) / 2
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std).reshape(b, n, 3, self.size, self.size)

    def hidden(self, images: torch.Tensor, text: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """images (b, n, 3, H, W) in [-1, 1], text (b, tokens) from embed_text -> (hidden states (layers + 1) x
        (b, tokens, width), real (b, tokens) bool: not padding)."""
        if images.shape[1] != self.images:
            raise ValueError(f"this prefix was built for {self.images} images per sample, got {images.shape[1]}")
        if text.is_floating_point():
            raise TypeError(f"the VLM's token ids arrived as {text.dtype}; they must stay integers (embed_text gives "
                            f"int64), since a cast to a low precision float changes large ids")
        ids = text.long()
        real = ids != self.pad
        pixels = self.pixels(images).to(self.model.dtype)
        if self.kind == "smolvlm":  # SmolVLM drops an image whose every value is 0 as padding: keep a uniform one
            blank = (pixels == 0).flatten(2).all(-1)  # (b, n), e.g. a mid-grey frame under mean = std = 0.5
            if bool(blank.any()):
                pixels = pixels.clone()
                pixels[..., 0, 0, 0][blank] = 1e-6
        if self.traced:  # shapes only (wam bench memory, fake tensors): no data-dependent merging or masks
            n = self.images * self.image_tokens
            image = self.model.get_image_features(pixels.flatten(0, 1)).pooler_output.reshape(ids.shape[0], n, -1)
            embeds = torch.cat([image, self.model.get_input_embeddings()(ids[:, n:])], 1)
            out = self.model(inputs_embeds=embeds, token_type_ids=torch.zeros_like(ids), output_hidden_states=True,
                             use_cache=False)
        elif self.kind == "paligemma":
            out = self.model(input_ids=ids, pixel_values=pixels.flatten(0, 1), attention_mask=real.long(),
                             token_type_ids=torch.zeros_like(ids), output_hidden_states=True, use_cache=False)
        else:
            out = self.model(input_ids=ids, pixel_values=pixels, attention_mask=real.long(), output_hidden_states=True,
                             use_cache=False)
        return out.hidden_states, real
