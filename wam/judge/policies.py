"""The policies a judge ranks, named on the command line, and deliberately weakened ones.

    PATH                          a checkpoint folder (runs/x/last)
    PATH#noise=0.5                its actions plus Gaussian noise of std 0.5 (robot units, every dimension)
    PATH#instruction=other        it reads another judged task's instruction (a shuffled instruction)
    PATH#noise=0.3#instruction=other
    lerobot:PATH                  a lerobot-train `pretrained_model` folder (ACT, Diffusion Policy; wam/lerobot/policy.py),
                                  weakened the same way (lerobot:PATH#noise=0.5); run from the lerobot venv
    ws://HOST:PORT                a running `wam serve` (any checkpoint, served anywhere: wam/serve/client.py)

A `Contender` is one such policy, loaded once. A checkpoint's (`Contender`) drives many imagined episodes in
lockstep through one batched forward pass (`WAMPolicy.infer_batch`), each with the noise its real episode draws in
`wam eval` (the sampling generator seeded by the episode's seed; the weakening noise of runtime.Weakened from
its own generator). Any other `Policy` (`PolicyContender`: a lerobot policy keeps its action queue and observation
history between steps, a served one its session) is judged one episode at a time, reset with the episode's seed as
`wam eval` resets it. A policy that returns one action per step (action_horizon 1) is asked `execute` times per
chunk, on the chunk's observation: the world model imagines frames only every `execute` steps. For a policy that
computes a chunk every n steps (n a multiple of `execute`, as lerobot's ACT and Diffusion Policy do with their
`n_action_steps`), the network runs at the steps it runs in the real episode, on that step's observation; a policy
that reads every step's frame, or past ones (Diffusion Policy's `n_obs_steps`), sees the chunk's observation held.
The actions pass the serving guard (wam.safety), as in `wam eval`. The real counterpart of each is `wam eval PATH --action-noise STD --swap-instructions` (`--policy lerobot:PATH`,
`--remote ws://...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wam.runtime import Weakened, noise_generator
from wam.types import Observation, PolicyMetadata

OTHER = "other"


LEROBOT = "lerobot:"
REMOTE = ("ws://", "wss://")


@dataclass(frozen=True)
class PolicySpec:
    source: str
    """A checkpoint folder, a lerobot `pretrained_model` folder (kind "lerobot"), or the URL (kind "remote")."""
    noise: float = 0.0
    instruction: str | None = None
    """"other": each task's instruction replaced by the next judged task's (a shuffled instruction)."""
    kind: str = "checkpoint"
    """What `source` is: "checkpoint" (ours), "lerobot" or "remote"."""

    @classmethod
    def parse(cls, text: str) -> "PolicySpec":
        path, *mods = str(text).split("#")
        if path.startswith(REMOTE):
            if mods:
                raise ValueError(f"{text}: a served policy is judged as it is served; weaken the checkpoint and judge "
                                 f"it in process instead (PATH#{mods[0]})")
            return cls(path, kind="remote")
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
        if path.startswith(LEROBOT):
            from wam.lerobot.policy import check_installed, read_checkpoint

            read_checkpoint(path[len(LEROBOT):])  # clear errors, before anything heavy loads: not a lerobot folder,
            check_installed(path[len(LEROBOT):])  # or no lerobot in this venv
            return cls(str(Path(path[len(LEROBOT):])), kind="lerobot", **fields)
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path} is not a checkpoint folder (expected e.g. runs/train/last, "
                                    f"lerobot:PATH or ws://HOST:PORT)")
        return cls(str(Path(path)), **fields)

    @property
    def path(self) -> Path:
        """The checkpoint's or lerobot policy's folder."""
        if self.kind == "remote":
            raise ValueError(f"{self.source} is a served policy, not a folder")
        return Path(self.source)

    @property
    def target(self) -> str:
        """The policy as named, without its weakenings: PATH, lerobot:PATH or the URL."""
        return LEROBOT + self.source if self.kind == "lerobot" else self.source

    def __str__(self) -> str:
        mods = ([f"noise={self.noise:g}"] if self.noise else []) + ([f"instruction={self.instruction}"] if self.instruction else [])
        return "#".join([self.target, *mods])


@dataclass
class Episode:
    """One imagined episode's sampling generator and weakening noise."""

    generator: torch.Generator | None
    rng: np.random.Generator


def collector(text: str, tasks: tuple[str, ...], cameras: tuple[str, ...], image_size: int):
    """The checkpoint `text` names (PATH, PATH#noise=STD, PATH#instruction=other), run as `wam eval` runs it (the
    serving guard, chunks of its sampler's `execute` actions): what `wam collect --policies` records rollouts of
    (wam.data.collect.MakePolicy)."""
    from wam.policy import WAMPolicy

    spec = PolicySpec.parse(text)
    if spec.kind != "checkpoint":
        raise ValueError(f"--policies {text}: expected a checkpoint folder (PATH, PATH#noise=STD, PATH#instruction=other)")
    wam = WAMPolicy.from_checkpoint(spec.path)
    meta = wam.metadata
    if not set(meta.cameras) <= set(cameras) or tuple(meta.image_size) != (image_size, image_size):
        raise ValueError(f"--policies {text} reads cameras {list(meta.cameras)} at {meta.image_size} px; the data "
                         f"records {list(cameras)} at {image_size} px")
    return weakened_runner(spec, wam, tasks)


def weakened_runner(spec: PolicySpec, wam, tasks: tuple[str, ...]):
    """Our checkpoint `wam`, weakened as `spec` says (its instruction swapped among `tasks`' for instruction=other),
    run as `wam eval` runs it: the serving guard, chunks of its sampler's `execute` actions."""
    from wam.envs.tasks import swapped_instructions
    from wam.runtime import closed_loop
    from wam.safety import ActionGuard, Guarded

    prompts = swapped_instructions(tasks) if spec.instruction == OTHER else {}
    return closed_loop(Guarded(Weakened(wam, spec.noise, prompts), ActionGuard.from_normalizer(wam.norm)),
                       wam.sampler.execute)


def contender(spec: PolicySpec, tasks: tuple[str, ...], sampler=None):
    """The judged policy `spec` names, loaded: a `Contender` for a checkpoint, a `PolicyContender` otherwise."""
    from wam.envs.tasks import swapped_instructions

    if spec.kind == "checkpoint":
        return Contender(spec, tasks, sampler)
    prompts = swapped_instructions(tasks) if spec.instruction == OTHER else {}
    if spec.kind == "lerobot":
        from wam.lerobot.policy import LeRobotPolicy
        from wam.safety import ActionGuard, Guarded

        steps = sampler.steps if sampler is not None else None
        peer = LeRobotPolicy(spec.path, denoising_steps=steps)
        return PolicyContender(spec, Guarded(Weakened(peer, spec.noise, prompts), ActionGuard(*peer.action_bounds())))
    from wam.serve.client import RemotePolicy  # the server guards its actions

    remote = RemotePolicy(spec.target, history="client")
    return PolicyContender(spec, remote, execute=(remote.server_info.get("sampler") or {}).get("execute"))


class _Judged:
    """What every judged policy shares: `spec` and the `policy` it loaded."""

    spec: PolicySpec
    policy: object

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def close(self) -> None:
        if hasattr(self.policy, "close"):
            self.policy.close()


class PolicyContender(_Judged):
    """Any `Policy` judged one episode at a time (module docstring): `policy` is already weakened and guarded."""

    lockstep = False

    def __init__(self, spec: PolicySpec, policy, execute: int | None = None):
        self.spec, self.policy, self._execute = spec, policy, execute

    @property
    def execute(self) -> int | None:
        """Its own steps per chunk (a served checkpoint's sampler's), or None: the world model's nearest offset."""
        return self._execute

    def start(self, seeds: list[int]) -> list[Episode]:
        if len(seeds) != 1:
            raise ValueError(f"{self.name} keeps state between steps: it is judged one episode at a time, got {len(seeds)}")
        self.policy.reset(int(seeds[0]))
        return [Episode(None, noise_generator(seeds[0]))]

    def act(self, episodes: list[Episode], observations: list[Observation], execute: int) -> np.ndarray:
        """(1, >= execute, a): one chunk, or `execute` steps of a step-level policy on the chunk's observation."""
        (obs,) = observations
        if self.metadata.action_horizon > 1:
            return np.asarray(self.policy.infer(obs).actions, np.float32)[None]
        return np.concatenate([np.asarray(self.policy.infer(obs).actions, np.float32).reshape(1, -1)
                               for _ in range(execute)])[None]


class Contender(_Judged):
    """One judged checkpoint, its episodes in lockstep (module docstring)."""

    lockstep = True

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
    def execute(self) -> int:
        return self.policy.sampler.execute

    def start(self, seeds: list[int]) -> list[Episode]:
        return [Episode(torch.Generator().manual_seed(int(s)), noise_generator(s)) for s in seeds]

    def act(self, episodes: list[Episode], observations: list[Observation], execute: int | None = None) -> np.ndarray:
        """(n, k, a) action chunks in robot units, one per observation, each as its real episode would draw it."""
        obs = [o.replace(prompt=self.prompts.get(o.prompt, o.prompt)) for o in observations]
        outs = self.policy.infer_batch(obs, [e.generator for e in episodes])
        return np.stack([self.guard(self.weak.perturb(o.actions, e.rng)) for o, e in zip(outs, episodes)])
