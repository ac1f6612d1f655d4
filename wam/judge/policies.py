"""The policies a judge ranks, named on the command line, and deliberately weakened ones.

    PATH                          a checkpoint folder (runs/x/last)
    PATH#noise=0.5                its actions plus Gaussian noise of std 0.5 (robot units, every dimension)
    PATH#instruction=other        it reads another judged task's instruction (a shuffled instruction)
    PATH#noise=0.3#instruction=other

A `Contender` is one such policy, loaded once: `start(seeds)` and `act(...)` drive many imagined episodes in
lockstep through one batched forward pass (`WAMPolicy.infer_batch`), each with the noise its real episode draws in
`wam eval` (the sampling generator seeded by the episode's seed; the weakening noise of runtime.Weakened from
its own generator). The actions pass the serving guard (wam.safety), as in `wam eval`. Its real counterpart is
`wam eval PATH --action-noise STD --swap-instructions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wam.runtime import Weakened, noise_generator
from wam.types import Observation, PolicyMetadata

OTHER = "other"


@dataclass(frozen=True)
class PolicySpec:
    path: Path
    noise: float = 0.0
    instruction: str | None = None
    """"other": each task's instruction replaced by the next judged task's (a shuffled instruction)."""

    @classmethod
    def parse(cls, text: str) -> "PolicySpec":
        path, *mods = str(text).split("#")
        fields: dict = {}
        for mod in mods:
            key, _, value = mod.partition("=")
            if key == "noise":
                try:
                    fields["noise"] = float(value)
                except ValueError:
                    raise ValueError(f"{text}: noise={value!r} is not a number (expected e.g. PATH#noise=0.5)") from None
                if not fields["noise"] >= 0:
                    raise ValueError(f"{text}: noise must be >= 0, got {value}")
            elif key == "instruction" and value == OTHER:
                fields["instruction"] = OTHER
            else:
                raise ValueError(f"{text}: unknown weakening {mod!r}; expected noise=STD or instruction=other")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path} is not a checkpoint folder (expected e.g. runs/train/last)")
        return cls(Path(path), **fields)

    def __str__(self) -> str:
        mods = ([f"noise={self.noise:g}"] if self.noise else []) + ([f"instruction={self.instruction}"] if self.instruction else [])
        return "#".join([str(self.path), *mods])


@dataclass
class Episode:
    """One imagined episode's sampling generator and weakening noise."""

    generator: torch.Generator
    rng: np.random.Generator


class Contender:
    """One judged policy (module docstring)."""

    def __init__(self, spec: PolicySpec, tasks: tuple[str, ...], sampler=None):
        from wam.envs.tasks import swapped_instructions
        from wam.policy import WAMPolicy
        from wam.safety import ActionGuard

        self.spec = spec
        self.policy = WAMPolicy.from_checkpoint(spec.path, sampler)
        self.guard = ActionGuard.from_normalizer(self.policy.norm)
        self.prompts = swapped_instructions(tasks) if spec.instruction == OTHER else {}
        self.weak = Weakened(self.policy, spec.noise, self.prompts)

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    @property
    def execute(self) -> int:
        return self.policy.sampler.execute

    def start(self, seeds: list[int]) -> list[Episode]:
        return [Episode(torch.Generator().manual_seed(int(s)), noise_generator(s)) for s in seeds]

    def act(self, episodes: list[Episode], observations: list[Observation]) -> np.ndarray:
        """(n, k, a) action chunks in robot units, one per observation, each as its real episode would draw it."""
        obs = [o.replace(prompt=self.prompts.get(o.prompt, o.prompt)) for o in observations]
        outs = self.policy.infer_batch(obs, [e.generator for e in episodes])
        return np.stack([self.guard(self.weak.perturb(o.actions, e.rng)) for o, e in zip(outs, episodes)])
