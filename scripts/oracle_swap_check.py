"""Can a checkpoint's inverse dynamics follow a correct plan? From the first step of one held-out episode, run the
oracle swap of wam/judge/failure.py (every chunk decoded from the scripted expert's own future frames) and, for
comparison, the expert's actions; print the first decoded chunk beside the expert's, and when each succeeds.

    python scripts/oracle_swap_check.py CHECKPOINT TASK SEED      # e.g. runs/demo/train/last drawer-close-v3 100002
"""

import sys

import numpy as np
import torch

from wam.envs import make_env
from wam.judge.failure import _stacked, expert_future, oracle_swap
from wam.policy import WAMPolicy
from wam.safety import ActionGuard
from wam.types import Observation

MAX_STEPS = 200


def main() -> None:
    checkpoint, task, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w = WAMPolicy.from_checkpoint(checkpoint)
    m, k = w.cfg, w.sampler.execute
    cams = tuple(m.cameras)
    env = make_env(f"metaworld:{task}", cams, m.image_size)
    obs = env.reset(seed)
    frames, expert = expert_future(env, tuple(m.future_offsets), cams, m.future_size, k)
    now = Observation(images=_stacked([obs.images], w.metadata.context_offsets, cams), state=obs.state, prompt=obs.prompt)
    first = ActionGuard.from_normalizer(w.norm)(w.inverse_dynamics(now, frames, torch.Generator().manual_seed(seed)))
    print(f"first chunk decoded from the expert's frames, summed over {k} steps: {np.round(first[:k].sum(0), 2)}; "
          f"the expert's: {np.round(expert.sum(0), 2)} (unclipped)")
    # the same generator seed: the swap's first chunk is the one printed above
    solved, t = oracle_swap(w, env, obs, [], torch.Generator().manual_seed(seed), 0, MAX_STEPS, k)
    print(f"decoded from the expert's frames: {'success' if solved else 'failure'} after {t} steps")
    obs, ok, t = env.reset(seed), False, 0
    while t < MAX_STEPS and not ok:
        obs, ok = env.step(env.expert_action())
        t += 1
    print(f"the expert's actions: {'success' if ok else 'failure'} after {t} steps")
    env.close()


if __name__ == "__main__":
    main()
