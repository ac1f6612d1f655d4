"""Can a checkpoint's inverse dynamics follow a correct plan? From the first step of one held-out episode, decode
every chunk from the scripted expert's own future frames (the oracle swap of wam/judge/failure.py, from step 0),
and, for comparison, execute the expert's actions; print the first chunks' summed actions and when each succeeds.

    python scripts/oracle_swap_check.py CHECKPOINT TASK SEED      # e.g. runs/demo/train/last drawer-close-v3 100002
"""

import sys

import numpy as np
import torch

from wam.envs import make_env
from wam.judge.failure import _stacked, expert_future
from wam.policy import WAMPolicy
from wam.safety import ActionGuard
from wam.types import Observation


def main() -> None:
    checkpoint, task, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w = WAMPolicy.from_checkpoint(checkpoint)
    m, meta, k = w.cfg, w.metadata, w.sampler.execute
    cams, offsets = tuple(m.cameras), tuple(m.future_offsets)
    env = make_env(f"metaworld:{task}", cams, m.image_size)
    guard = ActionGuard.from_normalizer(w.norm)
    for variant in ("decoded from the expert's frames", "the expert's actions"):
        obs, past, ok, t = env.reset(seed), [], False, 0
        generator = torch.Generator().manual_seed(seed)
        while t < 200 and not ok:
            past.append({c: obs.images[c] for c in cams})
            frames, expert = expert_future(env, offsets, cams, m.future_size, k)
            stacked = Observation(images=_stacked(past, meta.context_offsets, cams), state=obs.state, prompt=obs.prompt)
            actions = guard(w.inverse_dynamics(stacked, frames, generator)) if variant.startswith("decoded") else expert
            if t < 12:
                print(f"{variant}, step {t}: summed chunk {np.round(np.asarray(actions[:k]).sum(0), 2)}, the expert's "
                      f"{np.round(expert.sum(0), 2)} (unclipped)")
            for j in range(k):
                obs, ok = env.step(actions[j])
                t += 1
                if ok:
                    break
                if j < k - 1:
                    past.append({c: obs.images[c] for c in cams})
        print(f"{variant}: {'success' if ok else 'failure'} after {t} steps")
    env.close()


if __name__ == "__main__":
    main()
