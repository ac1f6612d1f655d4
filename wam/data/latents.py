"""VAE latents of a dataset's frames, computed once and cached in the dataset's cache folder.

A pretrained backbone trains on latents, not pixels. Every frame of every camera the model reads is encoded
once (models/latent.FrameCodec, one frame per latent frame) from the frame cache (frames.py) and saved to
CACHE/latents-KEY.safetensors, where KEY names the VAE (its config and weight files), the cameras, the dataset
and the very frames read (FrameStore.fingerprint: their source files' digests, the transform, the episodes);
training windows then gather latents by frame position, like pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wam.data.frames import FrameStore, cache_dir
from wam.data.reader import Recordings


def cache_key(vae_dir: Path, cameras: tuple[str, ...], extra: str = "") -> str:
    vae_dir = Path(vae_dir)
    h = hashlib.sha256((vae_dir / "config.json").read_bytes())
    for f in sorted(vae_dir.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}".encode())
    h.update(json.dumps(list(cameras)).encode())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def dataset_latents(rec: Recordings, frames: FrameStore, encode, vae_dir: Path, batch: int = 64,
                    progress: bool = True) -> torch.Tensor:
    """(N, v, z, h, w) float16 latents of every frame of `cameras`; read from the cache when it is there.
    `encode`: (n, 3, H, W) in [-1, 1] -> (n, z, h, w)."""
    from tqdm import tqdm

    from wam.data.transforms import images_to_model

    cameras = frames.cameras
    key = cache_key(vae_dir, cameras, f"{rec.root}:{frames.fingerprint()}")  # these very frames, of this dataset
    path = cache_dir(rec) / f"latents-{key}.safetensors"
    n = len(rec.index)
    if path.is_file():
        lat = load_file(path)["latents"]
        if lat.shape[0] == n:
            return lat
    chunks = []
    for start in tqdm(range(0, n, batch), desc="VAE latents", unit="batch", disable=not progress):
        idx = np.arange(start, min(n, start + batch))
        x = np.stack([frames.read(v, idx) for v in range(len(cameras))], axis=1)  # (n, v, H, W, 3)
        x = images_to_model(torch.from_numpy(x)).flatten(0, 1)
        lat = encode(x)
        chunks.append(lat.reshape(-1, len(cameras), *lat.shape[1:]).half())
    lat = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"latents": lat.contiguous()}, tmp, metadata={"cameras": ",".join(cameras), "vae": str(vae_dir)})
    tmp.replace(path)
    return lat
