"""Where an imagined success comes from: the policy's behaviour on the world model's frames, or the head's verdict.

`wam judge` lets a policy act on imagined frames and asks the head whether the task got solved. When a policy is
imagined more (or less) successful than it really is, two things can be at fault:
  - the frames: on the world model's frames the policy acts differently from how it acts on real ones (better or
    worse actions);
  - the verdict: the state model and success head call the actions it took solved when they are not (or not when
    they are).
This script separates the two. Each policy is imagined as `wam bench judge` imagines it (the same world model, head,
seeds and noise), run on to max_steps whatever the head says (its probabilities are kept, so the verdict at any
threshold is read from them), and every action it executed in imagination is recorded. The same actions are then
executed open loop in the simulator from the same reset: the *shadow* episode. Per policy and task it prints

    real       the policy's real closed-loop success (read from a bench's real side, `--bench DIR`)
    imagined   the judge's verdict (head probability > --threshold at some chunk)
    shadow     the simulator's verdict on the actions the policy took in imagination

imagined - shadow is the verdict's error on the imagined behaviour; shadow - real is what acting on imagined frames
changed. Over all policies it prints Spearman and MMRV of each against real, and writes everything to --out (JSON;
a policy already there is not run again, so a killed run resumes).

    OMP_NUM_THREADS=1 python scripts/judge_shadow_check.py --world runs/judge3/world/last --head H \
        --bench runs/bench/judge7-12k --out runs/judge8/shadow.json POLICY [POLICY#noise=1 ...]

With --true-arm the policy reads the arm's state from a simulator that executes the same actions (TrueArm), not
from the head's state model: shadow against real then measures the frames alone, and this run against the plain
one what the state model's arm drift adds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wam.evaluate import EVAL_SEED


SLACK = 8  # steps: two chunks of 4, the head's horizon and one more


class Recording:
    """A judged policy whose executed actions are kept per episode (seed -> list of (execute, a) chunks)."""

    def __init__(self, judged):
        self.judged, self.actions, self._seed = judged, {}, {}

    def __getattr__(self, name):  # lockstep, metadata, execute, close
        return getattr(self.judged, name)

    def start(self, seeds):
        episodes = self.judged.start(seeds)
        for e, s in zip(episodes, seeds):
            self._seed[id(e)] = int(s)
            self.actions[int(s)] = []
        return episodes

    def act(self, episodes, observations, execute):
        chunks = self.judged.act(episodes, observations, execute)
        for e, c in zip(episodes, chunks):
            self.actions[self._seed[id(e)]].append(np.asarray(c[:execute], np.float32))
        return chunks


class TrueArm:
    """The world model's frames, with the arm where the simulator puts it: each episode's actions are also executed
    in a simulator reset to its variation, and the robot state the policy reads next is the simulator's (the head's
    state model still steps the objects and the goal for the verdict). What is left between real and shadow is then
    what the frames alone change."""

    def __init__(self, world, envs: list, seeds: list[int]):
        self.world, self.envs = world, envs
        for env, s in zip(envs, seeds):
            env.reset(int(s))

    def __getattr__(self, name):  # cfg, config, text
        return getattr(self.world, name)

    def predict(self, images, state, prompt, actions, generator, rows, execute):
        small, big, _ = self.world.predict(images, state, prompt, actions, generator, rows, execute)
        after = []
        for r, i in enumerate(rows):
            for a in actions[r, :execute]:
                obs, _ = self.envs[i].step(a)
            after.append(obs.state)
        return small, big, np.stack(after)


def real_episodes(bench: Path, spec) -> dict[tuple[str, int], bool]:
    """(task, seed) -> real success, from the bench's real side (the results.json of `wam eval` for this policy)."""
    for f in sorted((bench / "real").glob("*/results.json")):
        r = json.loads(f.read_text())
        if r.get("bench_key", {}).get("policy") == str(spec):  # as wam.bench.judge.real_success keys its cache
            return {(e["task"], int(e["seed"])): bool(e["success"]) for e in r["episodes"]}
    raise FileNotFoundError(f"no real evaluation of {spec} under {bench}/real")


def shadow(env, seed: int, actions: list[np.ndarray]) -> tuple[bool, int]:
    """The simulator from the reset of `seed`, the actions executed open loop: (solved at some step, that step)."""
    env.reset(seed)
    for t, a in enumerate(np.concatenate(actions)):
        _, ok = env.step(a)
        if ok:
            return True, t + 1
    return False, -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("policies", nargs="+")
    ap.add_argument("--world", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--bench", required=True, type=Path, help="a `wam bench judge` folder with these policies' real side")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--true-arm", action="store_true",
                    help="the policy reads the simulator's robot state, not the state model's (TrueArm)")
    args = ap.parse_args()

    from wam.envs import make_env
    from wam.envs.tasks import instruction, parse_tasks
    from wam.judge.dream import World
    from wam.judge.head import JudgeHead
    from wam.judge.judge import first_observations, imagine_task
    from wam.judge.policies import PolicySpec, contender
    from wam.judge.rank import mmrv, spearman

    world, head = World(args.world), JudgeHead.load(args.head)
    tasks = parse_tasks(args.tasks) if args.tasks else tuple(world.config["data"]["tasks"])
    seeds = list(range(args.seed, args.seed + args.episodes))
    m = world.cfg
    starts = {t: first_observations(t, tuple(m.cameras), m.image_size, seeds) for t in tasks}
    done = json.loads(args.out.read_text()) if args.out.exists() else {"world": args.world, "head": args.head, "policies": []}
    have = {p["policy"] for p in done["policies"]}
    specs = [PolicySpec.parse(p) for p in args.policies]
    real_of = {str(s): real_episodes(args.bench, s) for s in specs}  # fail before the long part
    sims: dict = {}  # task -> the simulator the shadow episodes run in
    arms_of: dict = {}  # task -> one simulator per episode, for --true-arm

    for spec in tqdm(specs, desc="policies", unit="policy"):
        if str(spec) in have:
            continue
        judged = Recording(contender(spec, tasks))
        row = {"policy": str(spec), "tasks": {}}
        try:
            execute = judged.execute or m.future_offsets[0]
            for task in tasks:
                w = world
                if args.true_arm:
                    arms = arms_of.setdefault(task, [make_env(f"metaworld:{task}", ("oblique",), 16) for _ in seeds])
                    w = TrueArm(world, arms, seeds)
                dreams = imagine_task(w, head, judged, *starts[task], seeds, instruction(task), args.max_steps,
                                      execute, 1.0, 0)  # never solved: every episode runs on, its probabilities kept
                episodes = []
                env = sims.setdefault(task, make_env(f"metaworld:{task}", ("oblique",), 16))  # frames not read: the smallest render
                for d in dreams:
                    crossed = [i for i, p in enumerate(d.probability) if p > args.threshold]
                    ok, at = shadow(env, d.seed, judged.actions[d.seed])
                    episodes.append({"seed": d.seed, "real": real_of[str(spec)][(task, d.seed)],
                                     "imagined": bool(crossed), "imagined_step": (crossed[0] + 1) * execute if crossed else -1,
                                     "shadow": ok, "shadow_step": at})
                rate = {k: float(np.mean([e[k] for e in episodes])) for k in ("real", "imagined", "shadow")}
                row["tasks"][task] = {**rate, "episodes": episodes}
        finally:
            judged.close()
        for k in ("real", "imagined", "shadow"):
            row[k] = float(np.mean([row["tasks"][t][k] for t in tasks]))
        done["policies"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(done, indent=1))

    rows = [p for p in done["policies"] if p["policy"] in {str(s) for s in specs}]
    print(f"\n{'policy':52s} " + " ".join(f"{t[:13]:>20s}" for t in tasks) + "   mean r / i / s")
    for p in rows:
        name = p["policy"] if len(p["policy"]) <= 52 else "..." + p["policy"][-49:]
        cells = " ".join(f"{p['tasks'][t]['real']:6.2f}{p['tasks'][t]['imagined']:7.2f}{p['tasks'][t]['shadow']:7.2f}"
                         for t in tasks)
        print(f"{name:52s} {cells}   {p['real']:.2f} / {p['imagined']:.2f} / {p['shadow']:.2f}")
    eps = [e for p in rows for t in tasks for e in p["tasks"][t]["episodes"]]
    agree = np.mean([e["imagined"] == e["shadow"] for e in eps])
    late = [e for e in eps if e["imagined"] and not (e["shadow"] and e["shadow_step"] <= e["imagined_step"] + SLACK)]
    print(f"\nimagined solved at step t, the simulator not solved by t + {SLACK} on the same actions: {len(late)} of "
          f"{sum(e['imagined'] for e in eps)} imagined successes ({sum(e['shadow'] for e in late)} of them solved later)")
    print(f"per episode: the head's verdict agrees with the simulator's on the imagined actions in {agree:.3f} of "
          f"{len(eps)}; imagined solved, shadow not: {sum(e['imagined'] and not e['shadow'] for e in eps)}; "
          f"shadow solved, imagined not: {sum(e['shadow'] and not e['imagined'] for e in eps)}")
    if len(rows) >= 3:
        real = [p["real"] for p in rows]
        for k in ("imagined", "shadow"):
            print(f"{k:9s} against real: Spearman {spearman(real, [p[k] for p in rows]):.3f}  "
                  f"MMRV {mmrv(real, [p[k] for p in rows]):.3f}")
        print(f"imagined against shadow: Spearman {spearman([p['shadow'] for p in rows], [p['imagined'] for p in rows]):.3f}  "
              f"MMRV {mmrv([p['shadow'] for p in rows], [p['imagined'] for p in rows]):.3f}")


if __name__ == "__main__":
    sys.exit(main())
