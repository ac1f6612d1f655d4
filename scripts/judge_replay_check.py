"""Where does the judge's error on one policy come from? The policy runs for real in Meta-World (as `wam eval` runs
it: the serving guard, chunks of `execute` actions); its executed actions are recorded. Then the judge's state model
steps the real first state (the arm's and the environment's, as a judge starts) under those same actions, and the
head scores it as a judge does (every `execute` steps; solved when p > 0.5).

If the head, given the real actions, agrees with the real outcome, the judge's error on that policy lies in what the
policy does on imagined frames; if it calls the real failures solved, it lies in the state model or the head. The
head is also run on the real states themselves (every `execute` steps, no stepping): where that is wrong too, the
head is; where only the stepped states are, the state model is. Several heads are checked on the same real episodes.
With --forced, the state model is also stepped with one of its two parts held to the real states at every step: the
arm's (the environment's state model alone steps the objects and the goal) and the environment's (the arm's alone):
the part whose forcing brings the head back to the real outcome is the one that is wrong.

    python scripts/judge_replay_check.py runs/judge3/policies/ao-300/last --head runs/judge3/head [HEAD ...] [--episodes 10]
    python scripts/judge_replay_check.py "runs/judge3/policies/ao-1700/last#instruction=other" --head ...   (weakened as
                       `wam judge` names it: #noise=STD, #instruction=other; run as `wam eval --swap-instructions` runs it)
        [--trace 2]    also print the first 2 real failures of each task step by step: the real hand and first object
        [--one-step]   ... and each step the first object moved: its real change, the head's one step ahead
        [--gate 0.2]   a gated head's objects move where their probability of moving exceeds 0.2 (the head's: 0.5)
        [--trace-solved]  ... the first real successes instead (with --forced, also the first object as the
                       environment's state model steps it with the arm held to the real one)
                       beside the ones the first head stepped
"""

import argparse

import numpy as np
import torch

from wam.envs import make_env
from wam.judge.head import STILL, JudgeHead
from wam.judge.policies import PolicySpec, weakened_runner
from wam.policy import WAMPolicy
from wam.text import embed


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--head", required=True, nargs="+")
    p.add_argument("--tasks", default="button-press-topdown-v3,drawer-close-v3,reach-v3")
    p.add_argument("--judged-tasks", default="button-press-topdown-v3,drawer-close-v3,reach-v3",
                   help="the tasks whose instructions #instruction=other swaps among (as `wam judge --tasks`)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=100000, help="the first held-out seed (wam eval's and the judge's)")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--trace", type=int, default=0, help="real failures per task printed step by step (first head)")
    p.add_argument("--trace-solved", action="store_true", help="--trace real successes instead of real failures")
    p.add_argument("--one-step", action="store_true",
                   help="with --trace: also print every step the first object really moved, its change one step ahead "
                        "from the real state (first head) and, with a gated head, the probability that it moves")
    p.add_argument("--gate", type=float, default=None,
                   help="a gated head's entries move where their probability of moving exceeds this (the head's: 0.5)")
    p.add_argument("--forced", action="store_true",
                   help="also step with the arm's, then the environment's, state held to the real one (module docstring)")
    args = p.parse_args()
    heads = {h: JudgeHead.load(h) for h in args.head}
    if args.gate is not None:
        for head in heads.values():
            regate(head, args.gate)
    for h, head in heads.items():
        if head.cfg.frames or not head.cfg.environment_dim:
            raise SystemExit(f"{h} reads frames or no environment state; this check needs a head that reads the "
                             f"environment state and no frames (wam judge fit's default on wam collect data)")
    spec = PolicySpec.parse(args.checkpoint)
    wam = WAMPolicy.from_checkpoint(spec.path)
    execute = wam.sampler.execute
    runner = weakened_runner(spec, wam, tuple(args.judged_tasks.split(",")))
    meta = runner.metadata
    rows = {h: [] for h in heads}
    for task in args.tasks.split(","):
        env = make_env(f"metaworld:{task}", meta.cameras, meta.image_size[0])
        for seed in range(args.seed, args.seed + args.episodes):
            runner.reset(seed)
            obs = env.reset(seed)
            real_states = [np.concatenate([obs.state, env.environment_state()])]
            actions, success = [], False
            for t in range(args.max_steps):
                a = runner.infer(obs).actions[0]
                actions.append(np.clip(a, -1, 1))
                obs, success = env.step(a)
                real_states.append(np.concatenate([obs.state, env.environment_state()]))
                if success:
                    break
            real_states = torch.as_tensor(np.stack(real_states), dtype=torch.float32)
            words = torch.as_tensor(embed([obs.prompt]))[:1].float()
            traced = sum(r[2] == args.trace_solved for r in rows[args.head[0]] if r[0] == task)
            for h, head in heads.items():
                states = head.roll(real_states[:1], torch.as_tensor(np.stack(actions), dtype=torch.float32)[None])[0][0]
                fired = [bool((head.solved(None, x, words.expand(len(x), -1)) > 0.5).any())
                         for x in (states[execute - 1::execute], real_states[1:][execute - 1::execute])]
                if args.forced:
                    fired += [bool((head.solved(None, x, words.expand(len(x), -1)) > 0.5).any())
                              for x in (forced_roll(head, real_states, actions, part)[execute - 1::execute]
                                        for part in ("arm", "environment"))]
                hand, thing = (float(np.linalg.norm(states[-1, i:i + 3].numpy() - real_states[-1, i:i + 3].numpy()))
                               for i in (0, head.cfg.state_dim))
                rows[h].append((task, seed, success, len(actions), *fired[:2], hand, thing, *fired[2:]))
                if h == args.head[0] and success == args.trace_solved and traced < args.trace:
                    o = head.cfg.state_dim
                    held = forced_roll(head, real_states, actions, "arm") if args.forced else None
                    print(f"{task} seed {seed} (real {'success' if success else 'failure'}), head {h}: real | stepped"
                          f"{' | stepped with the arm held real' if held is not None else ''}, metres")
                    every = range(0, len(actions), 10) if args.trace_solved else (0, 20, 40, 60, 80, 100, 140)
                    for t in sorted({t for t in every if t < len(actions)} | {len(actions) - 1}):
                        r_, s_ = real_states[t + 1].numpy(), states[t].numpy()
                        print(f"  step {t + 1:3d}  action {np.round(actions[t][:3], 2)}  hand {np.round(r_[:3], 3)} | "
                              f"{np.round(s_[:3], 3)}   first object {np.round(r_[o:o + 3], 3)} | {np.round(s_[o:o + 3], 3)}"
                              + (f" | {np.round(held[t, o:o + 3].numpy(), 3)}" if held is not None else ""))
                    if args.one_step:
                        one_step(head, real_states, actions)
        env.close()
    for h in heads:
        print(f"{args.checkpoint}, head {h}: real episodes, and the head stepping their real actions")
        for task in args.tasks.split(",") + [None]:
            sel = [r for r in rows[h] if task is None or r[0] == task]
            real = np.array([r[2] for r in sel])
            replay, on_real = np.array([r[4] for r in sel]), np.array([r[5] for r in sel])
            forced = (f"  arm forced {np.mean([r[8] for r in sel]):.2f}  environment forced {np.mean([r[9] for r in sel]):.2f}"
                      if args.forced else "")
            print(f"  {task or 'all':26s} episodes {len(sel):3d}  real success {real.mean():.2f}  head on the real actions "
                  f"{replay.mean():.2f}  real failures called solved {replay[~real].mean() if (~real).any() else float('nan'):.2f} "
                  f"({int((~real).sum())})  head on the real states agrees {(on_real == real).mean():.2f}  drift at the "
                  f"end: hand {100 * np.mean([r[6] for r in sel]):.1f} cm, first object {100 * np.mean([r[7] for r in sel]):.1f} cm"
                  f"  steps real {np.mean([r[3] for r in sel]):.0f}{forced}")


def regate(head: JudgeHead, p: float) -> None:
    """Make this head's gated environment entries move where their probability of moving exceeds `p` (its own
    `change`: 0.5), the rest of the step unchanged."""
    if not head.cfg.gated:
        raise SystemExit("--gate needs heads fitted with --gated")
    cut = float(np.log(p / (1 - p)))

    def change(state, action, motion=None, past=None):
        robot, environment, moves = head.parts(state, action, motion, past)
        return torch.cat([robot, environment * (moves > cut)], -1)
    head.change = change


@torch.no_grad()
def one_step(head: JudgeHead, real_states: torch.Tensor, actions: list) -> None:
    """Print each step at which the first object really moved (more than the head's STILL): its real change, the
    change the head predicts one step ahead from the real state and memory, and (gated) the probability it moves."""
    o, memory = head.cfg.state_dim, None
    print("    one step ahead from the real state, where the first object moved (cm; real | predicted; p: it moves)")
    for t, a in enumerate(torch.as_tensor(np.stack(actions), dtype=torch.float32)):
        x, a = real_states[t:t + 1], a[None]
        nxt = head.step(x, a, memory)
        moves = head.parts(head.norm(x), a, *head.split(memory))[2]
        memory = head.remember(memory, real_states[t + 1:t + 2] - x, a)
        real = (real_states[t + 1] - x[0])[o:o + 3]
        if (real.abs() > STILL).any():
            p = "" if moves is None else "  p " + " ".join(f"{v:.2f}" for v in torch.sigmoid(moves[0, :3]).tolist())
            print(f"    step {t + 1:3d}  hand - object {np.round(100 * (x[0, :3] - x[0, o:o + 3]).numpy(), 1)}  change "
                  f"{np.round(100 * real.numpy(), 2)} | {np.round(100 * (nxt[0] - x[0])[o:o + 3].numpy(), 2)}{p}")


@torch.no_grad()
def forced_roll(head: JudgeHead, real_states: torch.Tensor, actions: list, part: str) -> torch.Tensor:
    """(T, D) the states stepped through `actions` from the real first state, `part` ("arm": the robot state;
    "environment": the rest) set to the real state after every step: the other part's state model steps alone."""
    S, state, memory, out = head.cfg.state_dim, real_states[:1], None, []
    cols = slice(0, S) if part == "arm" else slice(S, None)
    for t, a in enumerate(torch.as_tensor(np.stack(actions), dtype=torch.float32)):
        nxt = head.step(state, a[None], memory)
        nxt[:, cols] = real_states[t + 1:t + 2, cols]
        memory, state = head.remember(memory, nxt - state, a[None]), nxt
        out.append(state[0])
    return torch.stack(out)


if __name__ == "__main__":
    main()
