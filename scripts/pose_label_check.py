"""Can action-free video be labelled through the arm's pose? A check on the `unseen` split's pool.

A WAM's own inverse dynamics, trained on MT10, labels the video of the 5 `unseen` tasks worse than guessing the mean
(docs/generalise.md: R^2 -0.24). The arm looks the same in every task, so this script tries another route in two
parts, each trained on the labelled MT10 episodes only (the first 50 per task, as the bench's training set):

    pose estimator   both cameras' frames (resized to --size px) -> the robot state (hand x, y, z, gripper);
                     wam.pose_label's network (--train.pose-labels), trained by regression
    state IDM        the states at offsets -2..5 around frame t (positions relative to t) -> the action at t;
                     an MLP as wam.pose_label's, fitted once on the true states and once on the estimated ones

and scores both on the first 50 episodes of each `unseen` task (their true states and actions are in the pool; the
bench hides them): the estimator's mean absolute error (hand in cm), and the IDM's R^2 per action dimension
(1 - error / variance of the true actions; 0 is guessing their mean), over all unseen frames and per task (per task
against the variance over all unseen frames, as `wam.label.label_error` does with its `variance`). The
true-state IDM bounds what a perfect estimator would give. Writes everything to --out (JSON).

    python scripts/pose_label_check.py --pool runs/bench/generalise-env/pools/mt10 --out runs/gen9/pose-label.json

--augment adds random erasing (rectangles of random colour over the frames: objects the estimator never saw) and a
per-channel colour scale to the estimator's training batches.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wam.bench.generalise import MT10, UNSEEN
from wam.config import DataConfig
from wam.data.frames import open_frames
from wam.data.reader import read_dataset
from wam.pose_label import pose_net, state_features
CM = torch.tensor([100.0, 100.0, 100.0, 1.0])  # hand position in cm, the gripper as recorded


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """float (b, c, h, w) in [0, 1]: one rectangle of random colour erased per image and camera, channels scaled."""
    b, c, h, w = x.shape
    x = x.clone()
    views = c // 3
    for v in range(views):
        hh = torch.randint(h // 8, h // 3, (b,), generator=g)
        ww = torch.randint(w // 8, w // 3, (b,), generator=g)
        y0 = (torch.rand(b, generator=g) * (h - hh)).long()
        x0 = (torch.rand(b, generator=g) * (w - ww)).long()
        colour = torch.rand(b, 3, generator=g)
        rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        m = ((rows >= y0[:, None, None]) & (rows < (y0 + hh)[:, None, None]) &
             (cols >= x0[:, None, None]) & (cols < (x0 + ww)[:, None, None]))  # (b, h, w)
        sl = slice(3 * v, 3 * v + 3)
        x[:, sl] = torch.where(m[:, None], colour[:, :, None, None], x[:, sl])
    return (x * (0.8 + 0.4 * torch.rand(b, c, 1, 1, generator=g))).clamp(0, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", required=True, help="the `unseen` split's pool (wam bench generalise's OUT/pools/mt10)")
    p.add_argument("--out", required=True, help="JSON to write")
    p.add_argument("--size", type=int, default=48, help="the estimator's input size in px")
    p.add_argument("--steps", type=int, default=1500, help="the estimator's training steps (batch 128)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task, trained on (MT10) and scored (unseen)")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    rec = read_dataset(args.pool, DataConfig())
    rec, store = open_frames(rec, int(rec.info["features"][rec.cameras[0].key]["shape"][0]))
    tasks = np.array(rec.env_tasks)
    by_task: dict[str, list[int]] = {}
    for e, t in enumerate(tasks):
        by_task.setdefault(str(t), []).append(e)
    missing = [t for t in (*MT10, *UNSEEN) if t not in by_task]
    if missing:
        raise SystemExit(f"{args.pool} has no episodes of {', '.join(missing)}: expected the `unseen` split's pool")
    train_eps = [e for t in MT10 for e in by_task[t][:args.episodes]]
    test_eps = [e for t in UNSEEN for e in by_task[t][:args.episodes]]

    def frames(eps):
        idx = np.concatenate([np.arange(rec.episode_from[e], rec.episode_to[e]) for e in eps])
        views = []
        for v in range(len(rec.cameras)):
            x = torch.from_numpy(store.read(v, idx)).permute(0, 3, 1, 2).float()
            views.append(F.interpolate(x, size=(args.size, args.size), mode="area").round().to(torch.uint8))
        return idx, torch.cat(views, 1)

    t0 = time.time()
    tr_idx, tr_x = frames(train_eps)
    te_idx, te_x = frames(test_eps)
    print(f"frames: {len(tr_x)} of MT10, {len(te_x)} of the unseen tasks ({time.time() - t0:.0f} s)", flush=True)
    state = torch.from_numpy(rec.state[:, :4])
    action = torch.from_numpy(rec.action)
    mu, sd = state[tr_idx].mean(0), state[tr_idx].std(0) + 1e-6

    net = pose_net(tr_x.shape[1], 4)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=args.steps)
    target = (state[tr_idx] - mu) / sd
    t0 = time.time()
    for step in range(args.steps):
        i = torch.randint(len(tr_x), (128,), generator=g)
        x = tr_x[i].float() / 255
        if args.augment:
            x = augment(x, g)
        loss = F.mse_loss(net(x), target[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"estimator step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    with torch.no_grad():
        est_tr, est_te = (torch.cat([net(x[i:i + 512].float() / 255) for i in range(0, len(x), 512)]) * sd + mu
                          for x in (tr_x, te_x))

    def task_mask(eps, t):
        return torch.from_numpy(np.concatenate([np.full(rec.episode_to[e] - rec.episode_from[e], tasks[e] == t)
                                                for e in eps]))

    result = {"command": "python scripts/pose_label_check.py " + " ".join(
        f"--{k} {v}" if not isinstance(v, bool) else f"--{k}" for k, v in vars(args).items() if v is not False),
        "train_tasks": list(MT10), "unseen_tasks": list(UNSEEN), "frames": {"train": len(tr_x), "unseen": len(te_x)}}
    mae = {}
    for name, idx, est in (("train", tr_idx, est_tr), ("unseen", te_idx, est_te)):
        mae[name] = ((est - state[idx]).abs().mean(0) * CM).tolist()
    mae["unseen_per_task"] = {t: ((est_te - state[te_idx]).abs()[task_mask(test_eps, t)].mean(0) * CM).tolist()
                              for t in UNSEEN}
    result["pose_mae_cm"] = mae
    print("estimator mean absolute error (hand x, y, z in cm; gripper):",
          {k: [round(v, 2) for v in mae[k]] for k in ("train", "unseen")}, flush=True)

    def windows(est, eps):
        lengths = np.array([rec.episode_to[e] - rec.episode_from[e] for e in eps])
        ep_to = np.repeat(np.cumsum(lengths), lengths)
        return state_features(est, ep_to - np.repeat(lengths, lengths), ep_to)

    def fit(f, y, steps=3000):
        m = nn.Sequential(nn.Linear(f.shape[1], 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 4))
        fm, fs = f.mean(0), f.std(0) + 1e-6
        o = torch.optim.AdamW(m.parameters(), 1e-3)
        for _ in range(steps):
            i = torch.randint(len(f), (512,), generator=g)
            loss = F.mse_loss(m((f[i] - fm) / fs), y[i])
            o.zero_grad()
            loss.backward()
            o.step()
        return lambda z: m((z - fm) / fs).detach()

    def r2(pred, y, var=None):
        """1 - mean squared error / var per dimension; var: the true actions' own variance unless given."""
        var = y.var(0, unbiased=False) if var is None else var
        return [None if v < 1e-8 else float(x) for x, v in zip(1 - ((pred - y) ** 2).mean(0) / var.clamp_min(1e-8), var)]

    y_tr, y_te = action[tr_idx], action[te_idx]
    pooled = y_te.var(0, unbiased=False)  # per task, R^2 against the variance over all unseen frames (a task whose
    #                                       own actions barely vary in a dimension would otherwise blow its R^2 up)
    for name, a, b in (("true_states", state[tr_idx], state[te_idx]), ("estimated_states", est_tr, est_te)):
        f_tr, f_te = windows(a, train_eps), windows(b, test_eps)
        idm = fit(f_tr, y_tr)
        pred = idm(f_te)
        out = {"r2_train": r2(idm(f_tr), y_tr), "r2_unseen": r2(pred, y_te),
               "r2_unseen_per_task": {t: r2(pred[task_mask(test_eps, t)], y_te[task_mask(test_eps, t)], pooled)
                                      for t in UNSEEN}}
        result[f"idm_{name}"] = out
        fmt = lambda xs: [None if x is None else round(x, 2) for x in xs]  # noqa: E731
        print(f"IDM on {name}: R^2 (x, y, z, gripper) train {fmt(out['r2_train'])}, unseen {fmt(out['r2_unseen'])}")
        for t in UNSEEN:
            print(f"    {t:18s} {fmt(out['r2_unseen_per_task'][t])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
