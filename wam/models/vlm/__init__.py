"""Vision-language prefixes for VLAs and hybrids (models/vla.py, models/mot.py): each reads every camera image and the
instruction and returns its hidden states of every layer, and which positions are real tokens.

    hf.py       PaliGemma (π0's VLM) and SmolVLM (SmolVLA's) through transformers, from a folder (`--backbone
                paligemma|smolvlm --backbone-path DIR`)
    lite.py     EfficientNet-Lite0 (ImageNet) and MiniLM, fused by layers trained here: what runs offline (`--backbone lite`)
    folders.py  the transformers folder layout, its checks, fingerprints and tiny random folders (`save_tiny`)
"""
