"""Two checks of a judge's head (`wam judge fit`) that need no world model, on a failure-rich dataset:

1. **Rolled**: each episode's state stepped by the head's state model under the episode's recorded actions, from
   its real first state (as a judge steps it under a policy's actions), the head scoring it every `--execute` steps
   without frames (a head that reads none: the default where the data records the environment state): is the
   episode imagined solved, against what really happened? And how far the stepped hand (and first object) drift
   from the recorded ones after 10, 30, 60 and 100 steps.
2. **Reach boundary**: on every recorded frame of the reach task, the head's verdict against the distance from the
   point between the fingers to the goal, beside the frames' real label: how sharp the head's boundary is. Meta-World
   solves reach when that point (its `tcp_center`: the recorded hand position, the state's first three entries, plus
   `FINGERTIP_OFFSET`, 4.5 cm lower) is within 5 cm of the goal; the head is fitted to "solved within `--horizon`
   steps", so frames just outside 5 cm may be labelled solved.

    python scripts/judge_head_check.py runs/judge2/head-env-noframes --data runs/wm/failures [--episodes held-out|all]

`held-out` (the default) are the episodes `wam judge fit` kept out of training (its --val-fraction and --seed).
"""

import argparse

import numpy as np
import torch

from wam.data.reader import read_dataset
from wam.envs.metaworld import ENVIRONMENT_STATE_NAMES, FINGERTIP_OFFSET
from wam.judge.head import JudgeHead, judge_state, validation_episodes
from wam.text import embed


DRIFT_AT = (10, 30, 60, 100)


def rolled(head: JudgeHead, rec, state: np.ndarray, episodes: list[int], text: np.ndarray, execute: int) -> list[dict]:
    out = []
    hand, thing = slice(0, 3), slice(head.cfg.state_dim, head.cfg.state_dim + 3)  # the first object's position
    for e in episodes:
        a, b = int(rec.episode_from[e]), int(rec.episode_to[e])
        s = torch.as_tensor(state[a:a + 1])
        words = torch.as_tensor(text[rec.task_index[a]])[None].float()
        states = head.roll(s, torch.as_tensor(rec.action[a:b - 1][None], dtype=torch.float32))[0][0]  # (T, S [+ Z])
        drift = {t: [float(np.linalg.norm(states[t - 1, k].numpy() - state[a + t][k])) for k in (hand, thing)
                     if k.stop <= state.shape[1]] for t in DRIFT_AT if t <= len(states)}
        checked = states[execute - 1::execute]  # the state the judge checks every `execute` steps
        fired = np.flatnonzero(head.solved(None, checked, words.expand(len(checked), -1)).numpy() > 0.5)
        solved_at = int(fired[0] + 1) * execute if len(fired) else None
        hits = np.flatnonzero(rec.success[a:b])
        out.append({"task": rec.instructions[rec.task_index[a]], "real": bool(len(hits)), "imagined": solved_at is not None,
                    "real_step": int(hits[0]) + 1 if len(hits) else None, "imagined_step": solved_at, "drift": drift})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("head")
    p.add_argument("--data", required=True)
    p.add_argument("--episodes", choices=("held-out", "all"), default="held-out")
    p.add_argument("--execute", type=int, default=4)
    args = p.parse_args()
    head, rec = JudgeHead.load(args.head), read_dataset(args.data)
    if head.cfg.frames:
        raise SystemExit(f"{args.head} reads frames; these checks need one that reads none (wam judge fit --frames False)")
    fit = head.meta.get("fit", {})
    n = len(rec.episode_ids)
    held_out = validation_episodes(n, fit.get("val_fraction", 0.1), np.random.default_rng(fit.get("seed", 0)))
    episodes = held_out if args.episodes == "held-out" else list(range(n))
    text = embed(rec.instructions)
    state = judge_state(rec, head.cfg.environment_dim > 0)

    rows = rolled(head, rec, state, episodes, text, args.execute)
    print(f"rolled under the recorded actions, {len(rows)} {args.episodes} episodes (solved when p > 0.5 at a check):")
    for task in sorted({r["task"] for r in rows}) + [None]:
        sel = [r for r in rows if task is None or r["task"] == task]
        succ, fail = [r for r in sel if r["real"]], [r for r in sel if not r["real"]]
        tpr = np.mean([r["imagined"] for r in succ]) if succ else float("nan")
        tnr = np.mean([not r["imagined"] for r in fail]) if fail else float("nan")
        print(f"  {task or 'all':40s} episodes {len(sel):3d}  agree {np.mean([r['real'] == r['imagined'] for r in sel]):.2f}  "
              f"real successes imagined solved {tpr:.2f} ({len(succ)})  real failures imagined failed {tnr:.2f} ({len(fail)})")

    parts = ("hand", "first object") if head.cfg.environment_dim else ("hand",)
    for k, part in enumerate(parts):
        at = {n: [r["drift"][n][k] for r in rows if n in r["drift"]] for n in DRIFT_AT}
        print(f"  {part} drift from the recorded one, mean over episodes: " + ", ".join(
            f"{100 * np.mean(v):.1f} cm after {n} steps ({len(v)})" for n, v in at.items() if v))

    reach = [i for i, s in enumerate(rec.instructions) if "reach" in s or s.startswith("move your hand")]
    if reach and head.cfg.environment_dim >= 3:
        idx = np.flatnonzero(rec.task_index == reach[0])
        words = torch.as_tensor(text[reach[0]])[None].expand(len(idx), -1).float()
        prob = head.solved(None, torch.as_tensor(state[idx]), words).numpy()
        fingers = rec.state[idx, :3] + np.asarray(FINGERTIP_OFFSET, dtype=np.float32)
        goal = rec.environment_state[idx, list(ENVIRONMENT_STATE_NAMES).index("goal_x"):][:, :3]
        dist = np.linalg.norm(fingers - goal, axis=1)
        print(f"reach, every recorded frame ({len(idx)}): the head's verdict by the distance from the point between the "
              f"fingers to the goal")
        for lo, hi in [(0, .03), (.03, .05), (.05, .06), (.06, .08), (.08, .1), (.1, .15), (.15, 10)]:
            m = (dist >= lo) & (dist < hi)
            if m.any():
                print(f"  {lo:.2f}-{hi:.2f} m: frames {m.sum():5d}  solved (p > 0.5) {np.mean(prob[m] > 0.5):.2f}  "
                      f"really solved at the frame {np.mean(rec.success[idx][m]):.2f}")


if __name__ == "__main__":
    main()
