"""Run under torchrun by test_fsdp.py: the same tiny LoRA fine-tune of a Wan-backed WAM, four ways.

    a    FSDP, 4 steps straight
    b    FSDP, 2 steps, then a new process group of runs resumes from the sharded checkpoint to step 4
    ddp  DDP, 4 steps (the reference: same batches, same noise, unsharded)
usage: torchrun --nproc_per_node=2 tests/fsdp_worker.py BACKBONE_DIR DATA OUT [KIND] [PRECISION]
"""

import dataclasses
import sys
from pathlib import Path

from wam.config import preset, with_backbone
from wam.train import train
from wam.testing import concrete

folder, data, out = sys.argv[1:4]
kind = sys.argv[4] if len(sys.argv) > 4 else "wan"
precision = sys.argv[5] if len(sys.argv) > 5 else "float32"
p = concrete(preset("tiny")) if kind == "wam" else with_backbone(concrete(preset("tiny")), kind, folder)
model = dataclasses.replace(p.model, text_tokens=8)
cfg = dataclasses.replace(p.train, data=Path(data), steps=4, ckpt_every=2, log_every=1, batch_size=4,
                          finetune="full" if kind == "wam" else "lora", lora_rank=4, parallel="fsdp",
                          gradient_checkpointing=kind != "wam", precision=precision, threads=1)
out = Path(out)
train(dataclasses.replace(cfg, out=out / "a"), model, p.sampler, progress=False)
train(dataclasses.replace(cfg, out=out / "b", steps=2), model, p.sampler, progress=False)
train(dataclasses.replace(cfg, out=out / "b"), model, p.sampler, progress=False)
train(dataclasses.replace(cfg, out=out / "ddp", parallel="ddp"), model, p.sampler, progress=False)
