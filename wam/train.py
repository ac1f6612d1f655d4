"""`wam train`: one explicit training loop.

AdamW, linear warm-up then cosine decay, EMA weights for evaluation, gradient clipping, a progress bar with
loss and throughput, a periodic closed-loop evaluation hook, and checkpoints (see checkpoint.py).

Resume is exact: every random draw of step `i` (batch indices, augmentation, noise levels, noise) comes
from a generator seeded by (seed, i, rank), so a resumed run replays the same batches and, on CPU, the same
loss curve. Under `torchrun --nproc_per_node=N` it runs DDP (gloo on CPU, nccl on GPU), or with
`--train.parallel fsdp` shards the model over the ranks (FSDP2, fsdp.py); each rank draws its own batch of
`batch_size`. The EMA holds copies of the trained parameters only (not a frozen backbone).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from wam import checkpoint, finetune, flow, fsdp, label, pose_label
from wam.backbones import build
from wam.config import DataConfig, ModelConfig, SamplerConfig, TrainConfig, to_dict
from wam.data.frames import FrameStore, open_frames
from wam.data.loader import batches
from wam.data.reader import Recordings, read_dataset, split, usable_stats
from wam.data.transforms import Normalizer
from wam.data.windows import Batch, Windows, batch_to
from wam.recipes import draw_times, recipe


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


BETAS = (0.9, 0.95)
"""AdamW's betas."""


def param_groups(trained: dict[str, torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW's two parameter groups: weight decay on matrices, none on biases, norms and position embeddings."""
    decay, no_decay = [], []
    for name, p in trained.items():
        (decay if p.dim() >= 2 and not name.startswith("pos_") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def loss_terms(model, batch: Batch, cfg: TrainConfig, model_cfg: ModelConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Weighted, masked, reduced losses for one batch; 'loss' is what is optimised.

    The recipe draws the noise levels and says which losses count (recipes.draw_times). Samples from
    action-free episodes train the frames only: their actions sit at pure noise and their loss is masked. A recipe
    whose inverse dynamics is blind to the task (plan-then-act, self-label) sees no instruction in the samples that
    train it; one with state dropout (self-label) sees no state in some samples; world-model's world-model samples
    see no instruction either.
    """
    model_cfg = model_cfg.resolved()
    b = batch.actions.shape[0]
    video, video_mask = batch.video, batch.video_mask
    net = _unwrap(model)  # the network's own capabilities, under DDP too
    if net.capabilities.packed_video:  # cosmos-policy: future state and value ride in extra latent frames
        video, video_mask = net.pack_video(batch)
    device = video.device
    t_video, t_action, w_video, w_action = (x.to(device) for x in draw_times(model_cfg.recipe, b, g, batch.has_actions))
    noise_v = torch.randn(video.shape, generator=g).to(device)
    noise_a = torch.randn(batch.actions.shape, generator=g).to(device)
    labelled = batch.has_actions.float()
    t_action = t_action * labelled
    w_action = w_action * labelled
    context = batch.context
    r = recipe(model_cfg.recipe)
    if not r.idm_reads_text:  # the samples that train the inverse dynamics (clean frames, actions) see no instruction
        blind = ((w_action > 0) & (t_video == 1)).to(context.text.dtype).reshape(-1, *([1] * (context.text.dim() - 1)))
        context = dataclasses.replace(context, text=context.text * (1 - blind))
    if not r.world_reads_text:  # the samples that train the world model (clean actions, frames) see no instruction
        world = ((t_action == 1) & (w_video > 0)).to(context.text.dtype).reshape(-1, *([1] * (context.text.dim() - 1)))
        context = dataclasses.replace(context, text=context.text * (1 - world))
    if r.state_dropout and context.state is not None:  # some labelled samples without the state, as video has none
        keep = (torch.rand(b, generator=g) >= r.state_dropout).float().to(device)
        known = keep if context.state_known is None else context.state_known.float() * keep
        context = dataclasses.replace(context, state_known=known)
    aux = (cfg.environment_state_weight or 0) > 0 and batch.environment_state is not None  # None: train resolves it
    per = flow.losses(model, video, batch.actions, context, t_video, t_action, noise_v, noise_a,
                      model_cfg.video_target, model_cfg.action_target,
                      environment=batch.environment_state.to(device) if aux else None)
    am = batch.action_mask[..., None] * w_action[:, None, None]
    action = (per["action"] * am).sum() / (am.sum() * per["action"].shape[-1]).clamp_min(1)
    terms = {"action": action}
    if model_cfg.future_frames:
        vm = (video_mask * w_video[:, None]).reshape(*video_mask.shape, 1, 1, 1, 1)
        per_frame = per["video"][0, 0].numel()
        terms["video"] = (per["video"] * vm).sum() / (vm.sum() * per_frame).clamp_min(1)
    if aux:  # the privileged state of the samples whose episodes have it as a target
        known = batch.environment_known.to(device)[:, None]
        terms["environment"] = (per["environment"] * known).sum() / (known.sum() * per["environment"].shape[-1]).clamp_min(1)
    video = terms.get("video")
    loss = cfg.action_weight * action if video is None else cfg.video_weight * video + cfg.action_weight * action
    if aux:
        loss = loss + cfg.environment_state_weight * terms["environment"]
    return {"loss": loss, "video": torch.zeros(()), **{k: v.detach() for k, v in terms.items()}}  # video 0 if none


def video_first_steps(cfg: TrainConfig, model_cfg: ModelConfig, label_step: int | None) -> int:
    """The number of first steps trained on the frames alone (--train.video-first); 0 when off."""
    if cfg.video_first is None:
        return 0
    if model_cfg.future_frames == 0:
        raise ValueError(f"--train.video-first trains the frames first, but recipe {model_cfg.recipe} predicts none; "
                         f"use a recipe that predicts frames or leave --train.video-first unset")
    n = max(1, min(cfg.steps - 1, round(cfg.video_first * cfg.steps)))
    if label_step is not None and n >= label_step:
        raise ValueError(f"--train.video-first {cfg.video_first} ends at step {n}, after the labelling at step "
                         f"{label_step} (--train.label-at {cfg.label_at}): the labels come from the inverse dynamics, "
                         f"which the frames-only steps do not train; make video-first end first")
    return n


def labelling_step(cfg: TrainConfig, model_cfg: ModelConfig, windows: Windows) -> int | None:
    """The step after which the recipe's inverse dynamics labels the action-free episodes, or None (a recipe that does
    not label, --train.label-at None, or no action-free episode)."""
    if not recipe(model_cfg.recipe).labels_video or cfg.label_at is None or bool(windows.labelled.all()):
        return None
    return max(1, min(cfg.steps - 1, round(cfg.label_at * cfg.steps)))


def closed_loop_hook(cfg: TrainConfig, out: Path):
    """Closed-loop evaluation of the EMA weights in the simulator the data came from, on held-out seeds,
    `eval_episodes` per trained task."""

    def hook(step: int, ckpt: Path) -> dict:
        from wam.evaluate import EvalConfig, evaluate

        summary = evaluate(EvalConfig(checkpoint=ckpt, episodes=cfg.eval_episodes, out=out / f"eval-{step:06d}",
                                      videos=1, workers=1), progress=False)
        print(f"\nstep {step}: closed-loop mean success {summary['mean_success']:.2f} "
              + " ".join(f"{t}={r['success_rate']:.2f}" for t, r in summary["tasks"].items()))
        return {"mean_success": summary["mean_success"],
                "tasks": {t: r["success_rate"] for t, r in summary["tasks"].items()}}

    return hook


def offline_hook(cfg: TrainConfig, out: Path, val: Recordings):
    """Offline evaluation of the EMA weights on the held-out episodes (no simulator: the robot's own data)."""

    def hook(step: int, ckpt: Path) -> dict:
        from wam.offline import OfflineConfig, evaluate_offline

        summary = evaluate_offline(OfflineConfig(checkpoint=ckpt, data=val.root, out=out / f"eval-{step:06d}",
                                                 max_windows=cfg.eval_episodes * 20, plots=False),
                                   recordings=val, progress=False)
        print(f"\nstep {step}: held-out action MSE {summary['action_mse']:.4g}" +
              (f", frame PSNR {summary['frames']['psnr']:.2f} dB (copy {summary['frames']['copy_psnr']:.2f})"
               if summary.get("frames") else ""))
        return {"action_mse": summary["action_mse"], **({"psnr": summary["frames"]["psnr"]} if summary.get("frames") else {})}

    return hook


def data_summary(rec: Recordings, val: Recordings | None, model_cfg: ModelConfig, data: DataConfig) -> dict:
    """What a checkpoint records about its data: enough to read it again the same way (evaluation, serving)."""
    env = (rec.info.get("wam") or {}).get("env")
    return {"root": str(rec.root), "config": to_dict(data), "cameras": list(rec.camera_names),
            "camera_keys": [c.key for c in rec.cameras], "camera_shapes": [list(c.shape) for c in rec.cameras],
            "fps": rec.fps, "robot_type": rec.info.get("robot_type"), "env": env,
            "state_names": rec.names(data.state_key)[:model_cfg.state_dim] if data.state_key else [],
            "action_names": rec.names(data.action_key), "instructions": rec.instructions,
            "tasks": sorted({t for t in rec.env_tasks if t}), "seeds": [min(rec.seeds), max(rec.seeds)],
            "episodes": len(rec.episode_ids), "action_free_episodes": int((~rec.has_actions).sum()),
            "video_only_instructions": video_only_instructions(rec),
            "frames": int(rec.episode_to[-1]), "val_episodes": [] if val is None else val.episode_ids.tolist(),
            "skipped": [{"episode": e, "why": why} for e, why in sorted({*rec.skipped, *(val.skipped if val else ())})]}


def video_only_instructions(rec: Recordings) -> list[str]:
    """The instructions whose every episode is action-free: tasks the data shows only in video (SamplerConfig.plan)."""
    shown = set(np.unique(rec.task_index).tolist())
    done = set(np.unique(rec.task_index[rec.has_actions[rec.episode_of]]).tolist())
    return [rec.instructions[i] for i in sorted(shown - done)]


def _unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _dist(device: str = "cpu", parallel: str = "ddp") -> tuple[int, int]:
    launched = "WORLD_SIZE" in os.environ
    if parallel == "fsdp" and not launched and not dist.is_initialized():
        raise ValueError("--train.parallel fsdp runs under torchrun: torchrun --nproc_per_node=N -m wam.cli train ...")
    if launched and (int(os.environ["WORLD_SIZE"]) > 1 or parallel == "fsdp") and not dist.is_initialized():
        # gloo on the CPU, nccl on GPUs; a long timeout lets rank 0 run closed-loop evaluations.
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(cfg: TrainConfig, model_cfg: ModelConfig, sampler: SamplerConfig = SamplerConfig(),
          progress: bool = True, eval_hook=None, data: DataConfig = DataConfig()) -> Path:
    """Train; returns the path of the final checkpoint (OUT/last). `eval_hook(step, checkpoint)` -> dict."""
    from tqdm import tqdm

    name = model_cfg.resolved().recipe
    if cfg.eval_every and eval_hook is None and "policy" not in recipe(name).modes:
        raise ValueError(f"--train.eval-every evaluates a policy, and recipe {name!r} makes none "
                         f"(it serves {', '.join(recipe(name).modes)}); leave --train.eval-every at 0")
    rank, world = _dist(cfg.device, cfg.parallel)
    sharded = cfg.parallel == "fsdp"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from wam.policy import resolve_device

    device = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cfg.device == "cuda" and world > 1 else cfg.device)
    everything = read_dataset(cfg.data, data)
    recs, val = split(everything)

    def frames_of(rec: Recordings, show: bool) -> tuple[Recordings, FrameStore]:
        return open_frames(rec, model_cfg.image_size, data.resize, progress=progress and show)

    # the data contract (cameras, state and action sizes) comes from the data; what the checkpoint records is concrete
    model_cfg = model_cfg.for_data(recs.camera_names, recs.state.shape[1], recs.action.shape[1]).resolved()
    z = 0 if recs.environment_state is None else recs.environment_state.shape[1]
    if cfg.environment_state_weight is None:  # default: on where the data holds the state and the backbone is ours
        on = bool(z) and model_cfg.backbone == "wam"
        cfg = dataclasses.replace(cfg, environment_state_weight=1.0 if on else 0.0)
        why = (f"{cfg.data} records observation.environment_state ({z} entries); --train.environment-state-weight 0 "
               f"turns it off" if on else f"backbone {model_cfg.backbone}" if z else "no observation.environment_state")
        if rank == 0:
            print(f"environment-state loss: {'on, weight 1.0' if on else 'off'} ({why})")
    if cfg.environment_state_weight > 0:  # the auxiliary head predicts the data's environment state
        if not z:
            raise ValueError(f"--train.environment-state-weight {cfg.environment_state_weight} trains a head on "
                             f"observation.environment_state, which {cfg.data} does not hold; `wam collect` records it")
        if model_cfg.environment_state_dim not in (0, z):
            raise ValueError(f"--model.environment-state-dim {model_cfg.environment_state_dim} but the data's "
                             f"observation.environment_state has {z} entries")
        model_cfg = dataclasses.replace(model_cfg, environment_state_dim=z)
    last = Path(cfg.out) / "last"
    found = checkpoint.latest(last) if cfg.resume else None
    if found is not None:  # before building a frame cache for nothing
        checkpoint.check_same_data(checkpoint.read_config(found), data_summary(recs, val, model_cfg, data))
    if rank == 0:  # rank 0 builds the frame cache, then the others open it
        recs, frames = frames_of(recs, True)
    if world > 1:
        dist.barrier()
    if rank != 0:
        recs, frames = frames_of(recs, False)
    if val is not None:
        val, _ = frames_of(val, False)
    if rank == 0:
        for e, why in sorted({*recs.skipped, *(val.skipped if val is not None else ())}):
            print(f"skipped episode {e}: {why}")
    stats = usable_stats(recs, data)
    normalizer = Normalizer.from_stats(stats, data.state_key, data.action_key, data.state_norm, data.action_norm)

    torch.manual_seed(cfg.seed)
    model = build(model_cfg)
    if found is None and cfg.init is None and hasattr(model, "load_pretrained"):  # pretrained image features
        weights = model.load_pretrained()
        if weights is not None and rank == 0:
            print(f"image encoder: ImageNet weights from {weights}")
    finetune.apply(model, cfg.finetune, cfg.lora_rank, gradient_checkpointing=cfg.gradient_checkpointing)
    text = model.embed_text(recs.instructions)  # once per instruction
    if model.capabilities.pretrained:
        model.text_encoder = None  # not needed again in training (umT5-XXL alone is 23 GB of host memory)
    latents = None
    if model.capabilities.latent_frames:  # a pretrained backbone trains on VAE latents, computed once per dataset
        from wam.data.latents import dataset_latents

        def encode() -> torch.Tensor:
            return dataset_latents(recs, frames, model.codec.encode, Path(model_cfg.backbone_path) / "vae",
                                   progress=progress and rank == 0)

        if rank == 0:
            latents = encode()
        if world > 1:  # rank 0 writes the cache, then the others read it
            dist.barrier()
        if rank != 0:
            latents = encode()
    windows = Windows(recs, frames, model_cfg, normalizer, text, latents)
    summary = data_summary(recs, val, model_cfg, data)
    model.to(device)
    out = Path(cfg.out)
    if cfg.init is not None and found is None:
        dropped = checkpoint.load_init(cfg.init, model, model_cfg)
        if rank == 0:
            print(f"initialised from {cfg.init}" + (f" (not used: {', '.join(dropped)})" if dropped else ""))
    if sharded:
        fsdp.shard(model, cfg.precision)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    ema = {n: p.detach().clone() for n, p in trained.items()}
    optimizer = torch.optim.AdamW(param_groups(trained, cfg.weight_decay), lr=cfg.lr, betas=BETAS)
    start = 0
    if found is not None:
        saved = checkpoint.read_config(found)
        checkpoint.check_resumable(saved, cfg, frames=len(windows), episodes=len(recs.episode_ids))
        start = checkpoint.load_train_state(found, model, ema, optimizer, model_cfg, sharded=sharded)
        normalizer = checkpoint.load_normalizer(found)  # the statistics the run started with
        windows.norm = normalizer
        if rank == 0:
            print(f"resumed from {found} at step {start}")
    net = (torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=model_cfg.future_frames == 0)
           if world > 1 and not sharded else model)

    counts = finetune.trainable(model)
    run_config = {"model": to_dict(model_cfg), "train": to_dict(cfg), "sampler": to_dict(sampler),
                  "data": summary,
                  "parameters": counts["trainable"], "world_size": world, **counts,
                  "init": str(cfg.init) if cfg.init else None}
    if model.capabilities.pretrained:  # the folder supplies weights at load time (frozen ones, VAE, text): which folder
        from wam.models.folders import fingerprint_of

        run_config["backbone_fingerprint"] = fingerprint_of(model_cfg.backbone, model_cfg.backbone_path)

    def save(step: int) -> Path:  # by rank 0, or by every rank when sharded
        return checkpoint.save(last, model=model, ema=ema, optimizer=optimizer, normalizer=normalizer,
                               config=run_config, step=step, sharded=sharded)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"training {counts['trainable'] / 1e6:.3g}M of {counts['total'] / 1e6:.3g}M parameters "
              f"({model_cfg.backbone}, {model_cfg.recipe}, {cfg.finetune}) on {len(windows)} frames "
              f"({len(recs.episode_ids)} episodes{f', {len(val.episode_ids)} held out' if val else ''}), "
              f"{cfg.steps} steps x {cfg.batch_size} x {world} rank(s)")
    if eval_hook is None and cfg.eval_every:
        if run_config["data"]["env"]:  # the data came from a simulator: evaluate there, closed loop
            eval_hook = closed_loop_hook(cfg, out)
        elif val is not None:
            eval_hook = offline_hook(cfg, out, val)
        elif rank == 0:
            print("no simulator and no held-out episodes (--data.val-fraction / --data.val-episodes): "
                  "--train.eval-every has nothing to evaluate on")
    metrics_file = out / "metrics.jsonl"
    spent = 0.0  # training seconds behind the step we continue from (earlier, interrupted runs)
    if rank == 0 and metrics_file.exists():  # keep only what led to the step we continue from
        rows = [json.loads(r) for r in metrics_file.read_text().splitlines() if r.strip()]
        rows = [r for r in rows if r["step"] <= start]
        metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        spent = max((r.get("train_s", 0.0) for r in rows), default=0.0)
    if cfg.pose_labels:  # before the recipe's own labelling: it then finds nothing left to label
        pose_file = out / "labels" / "pose.npz"
        labelling = {"steps": cfg.pose_label_steps, "smooth": cfg.pose_label_smooth,
                     "match_jitter": cfg.pose_label_match_jitter, "seed": cfg.seed}
        shared = (Path(cfg.pose_label_cache) / f"{pose_label.labelling_key(windows, **labelling)}.npz"
                  if cfg.pose_label_cache else None)
        if found is not None and pose_file.exists():
            poses = pose_label.load(pose_file)
        elif shared is not None and shared.exists():
            poses = pose_label.load(shared)
            if rank == 0:
                print(f"pose labels read from {shared} (made by an earlier run from the same data and settings)")
                pose_label.save(pose_file, poses)
        else:
            poses = pose_label.fit_and_label(windows, **labelling, progress=progress and rank == 0)
            if rank == 0:
                pose_label.save(pose_file, poses)
                if shared is not None:
                    pose_label.save(shared, poses)
        n = pose_label.apply(windows, poses)
        if rank == 0:
            print(f"labelled {n} frames of {len(poses.actions)} action-free episodes through the arm's estimated pose "
                  f"({pose_file})", flush=True)
    label_step = labelling_step(cfg, model_cfg, windows)
    if label_step is not None and sharded:
        raise ValueError(f"recipe {model_cfg.recipe} labels its video mid-training, which --train.parallel fsdp does not "
                         f"support yet; use ddp or --train.label-at None")
    labels_file = out / "labels" / f"step-{label_step}.npz"
    joined = video_first_steps(cfg, model_cfg, label_step)

    def stream():
        """The batches of steps start..steps; where the recipe labels its video, the labels are made at `label_step`
        (or read back when resuming past it) and the later batches train on them."""
        begin = start
        if label_step is not None:
            # at start == label_step the run stopped after that step's checkpoint, before or while labelling
            if start < label_step or (start == label_step and not labels_file.exists()):
                if start < label_step:
                    yield from batches(windows, cfg.batch_size, cfg.augment_shift, cfg.seed, range(start, label_step),
                                       workers=data.loader_workers, rank=rank, world=world, video_share=cfg.video_share)
                begin = label_step
                with label.weights_swapped(model, ema):
                    labels = label.label_video(model, windows, sampler, seed=cfg.seed, progress=progress and rank == 0)
                if rank == 0:
                    label.save_labels(labels_file, labels)
            elif not labels_file.exists():
                raise FileNotFoundError(f"resuming at step {start} past the labelling at step {label_step}, but its "
                                        f"labels {labels_file} are missing; start again without --train.resume")
            else:
                labels = label.load_labels(labels_file)
            n = label.apply_labels(windows, labels)
            if rank == 0:
                print(f"\nstep {label_step}: labelled {n} frames of {len(labels)} action-free episodes with the model's "
                      f"inverse dynamics ({labels_file})", flush=True)
        yield from batches(windows, cfg.batch_size, cfg.augment_shift, cfg.seed, range(begin, cfg.steps),
                           workers=data.loader_workers, rank=rank, world=world, video_share=cfg.video_share)

    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or rank != 0)
    model.train()
    tick, seen = time.perf_counter(), 0
    began = tick - spent
    for step, batch, g in stream():
        batch = batch_to(batch, device)
        if step < joined:  # video first: every sample is action-free (its actions at pure noise, their loss masked)
            batch = dataclasses.replace(batch, has_actions=torch.zeros_like(batch.has_actions))
        elif step == joined and joined and rank == 0:
            print(f"\nstep {step}: the actions join after {joined} frames-only steps (--train.video-first)", flush=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bfloat16"):
            terms = loss_terms(net, batch, cfg, model_cfg, g)

        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = fsdp.full(torch.nn.utils.clip_grad_norm_(list(trained.values()), cfg.grad_clip))
        optimizer.step()
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for n, p in trained.items():
                ema[n].lerp_(p.detach(), 1 - d)
        seen += cfg.batch_size * world
        bar.update(1)

        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            rate = seen / (time.perf_counter() - tick)
            tick, seen = time.perf_counter(), 0
            row = {"step": done, "loss": terms["loss"].item(), "video": terms["video"].item(),
                   "action": terms["action"].item(), "lr": lr, "grad_norm": grad_norm.item(), "samples_per_s": rate,
                   "train_s": time.perf_counter() - began}
            if "environment" in terms:
                row["environment"] = terms["environment"].item()
            with metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.4f}", act=f"{row['action']:.4f}", vid=f"{row['video']:.4f}",
                            sps=f"{rate:.0f}", **({"env": f"{row['environment']:.3f}"} if "environment" in row else {}))
        evaluate_now = eval_hook is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps
        if done % cfg.ckpt_every == 0 or done == cfg.steps or evaluate_now:
            ckpt = save(done) if rank == 0 or sharded else None
            if rank == 0 and evaluate_now:
                result = eval_hook(done, ckpt)
                with metrics_file.open("a") as f:
                    f.write(json.dumps({"step": done, "eval": result}) + "\n")
        if world > 1 and done % cfg.ckpt_every == 0:
            dist.barrier()
    bar.close()
    if world > 1:
        dist.barrier()
    return last
