"""World-Action Model recipes: the published ways of training and sampling one model, selected by name.

A recipe is a handful of facts about the same transformer (models/transformer.py), not a different network:
    attention   which token groups the future-frame tokens and the action tokens may read
                (c context, v future frames, a actions; context tokens always read only the context)
    noise       how training draws the noise levels of future frames and actions, and which losses count
    decode      how the sampler schedules the two modalities at inference
    modes       which of policy / world_model / inverse_dynamics / video the trained model can serve

    joint           one noise level shared by frames and actions, full attention          DreamZero
    decoupled       independent noise levels per modality, full attention               UWM, UVA
    flash           frame noise levels biased towards pure noise, actions uniform;      DreamZero-Flash
                    actions are sampled in a few steps while the frames stay noisy
    video-then-idm  frames first (they never read actions), then actions decoded by     UniPi
                    inverse dynamics from the finished frames (actions read only frames)
    features        one pass of the frame stream at pure noise; the action tokens       VPP, mimic-video
                    read its features at every layer (frames never read actions)
    plan-then-act   frames planned first from the instruction (they never read          UniPi's idea, with
                    actions); then an inverse-dynamics pass with the instruction        an IDM that reads the
                    zeroed reads the context images, the state and the planned frames: context and is blind
                    what it learns on labelled tasks applies to tasks seen only in      to the task
                    video
    self-label      one model as policy, world model, video model and a task-blind        VPT's labels inside
                    inverse dynamics (UWM's modality dropout: each sample trains one mode;  one WAM, with UWM's
                    the policy's actions are denoised beside pure-noise frames, as in       modality dropout
                    flash); midway through training its inverse dynamics labels the
                    action-free video, and the policy trains on those labels too
    cosmos-policy   the Cosmos backbone as is: actions, future robot state and a value   Cosmos Policy
                    estimate are extra latent frames denoised with the future frames;
                    best-of-N planning by the predicted value (backbone cosmos only)
    action-only     no future frames at all: the VLA-style baseline with the same       (VLA baseline)
                    backbone, inputs and training budget
    vla             a VLM prefix (images, instruction) and a flow-matching action        π0, SmolVLA
                    expert reading its layers; no future frames (models/vla.py)
    hybrid-foresight  the VLA also predicts the future frames, trained jointly; its      VLA with foresight
                    actions never read them, so inference can skip them at no cost
    hybrid-mot      a video stream and a narrow action stream (mixture of               LingBot-VA, Fast-WAM,
                    transformers), both reading the VLM prefix; frames never read the   with a VLM prefix
                    actions, actions read the frames (models/mot.py)
    world-model     no policy: an action-conditioned video model alone, for `wam judge`  Genie, the world
                    (every labelled sample predicts the frames from the context and     simulators of the
                    clean actions, with the instruction zeroed; action-free video       judges in issue 16
                    trains the video mode)

Noise level convention (flow.py): t = 1 is clean data, t = 0 pure noise. A modality held at t = 1 is given
(its loss is masked), one at t = 0 with its loss masked is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from wam.backbones import BACKBONES

MODES = ("policy", "world_model", "inverse_dynamics", "video")


@dataclass(frozen=True)
class Recipe:
    name: str
    follows: str
    """The published system this recipe follows."""
    video_reads: str
    """Token groups future-frame tokens attend to ('c' context, 'v' frames, 'a' actions)."""
    action_reads: str
    """Token groups action tokens attend to."""
    noise: Literal["shared", "independent", "video_or_idm", "modality_dropout", "action_only", "world"]
    t_video: Literal["uniform", "noisy"]
    decode: Literal["together", "video_then_actions"]
    modes: tuple[str, ...]
    steps: int
    """Default action denoising steps."""
    video_steps: int | None
    """Default frame denoising steps (None: as many as the action steps; 0: frames are not predicted)."""
    summary: str
    idm_reads_text: bool = True
    """False: the inverse dynamics (frames given clean, actions decoded) runs with the instruction zeroed, in training
    (every sample that trains the actions from clean frames) and at inference (modes.py): the sequence then holds
    nothing of the task, so it maps what the images and the frames show to actions the same way for every task, seen
    with actions or only in video. With decode "video_then_actions" (plan-then-act) the policy acts through it."""
    state_dropout: float = 0.0
    """Fraction of samples trained with the robot state absent (action-free video has none anyway), so the
    inverse dynamics can label video and the policy acts on it with or without the state."""
    plans_video_only: bool = False
    """The policy acts through the plan (modes.plan) on instructions its training data showed only in action-free
    video, and directly on the others (`SamplerConfig.plan` "auto"): a direct policy has nothing to go on for a task it
    never saw done, its world model has seen the task's video."""
    world_reads_text: bool = True
    """False: the world model (actions given clean, frames denoised) trains and runs with the instruction zeroed, so
    the frames it predicts follow from the context and the actions alone, not from what the instruction says should
    happen (a judge imagines what a policy's actions do, including the wrong ones: wam/judge)."""
    labels_video: bool = False
    """Training labels the action-free episodes with the model's own inverse dynamics once `TrainConfig.label_at` of
    the steps are done (label.py), and trains on them as demonstrations without a state from then on."""

    @property
    def predicts_video(self) -> bool:
        return self.noise != "action_only"


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("joint", "DreamZero (shared noise level)", "cva", "cva", "shared", "uniform", "together",
           ("policy",), 10, None, "one noise level shared by future frames and actions"),
    Recipe("decoupled", "UWM, UVA (independent noise levels)", "cva", "cva", "independent", "uniform", "together",
           MODES, 10, None, "independent noise levels per modality: one model is policy, world model, IDM and video predictor"),
    Recipe("flash", "DreamZero-Flash", "cva", "cva", "independent", "noisy", "together",
           MODES, 4, 1, "frame noise biased to pure noise (Beta(1, 3)), actions uniform: actions in few steps from noisy frames"),
    Recipe("video-then-idm", "UniPi (video model, then inverse dynamics)", "cv", "va", "video_or_idm", "uniform",
           "video_then_actions", ("policy", "inverse_dynamics", "video"), 10, None,
           "frames predicted fully, then actions decoded from the finished frames by inverse dynamics"),
    Recipe("features", "VPP, mimic-video (action decoder on video features)", "cv", "cva", "independent", "noisy",
           "together", ("policy", "video"), 10, 1,
           "one pass of the frame stream at pure noise; action tokens read its features at every layer"),
    Recipe("plan-then-act", "UniPi's plan-then-act, with a task-blind inverse dynamics reading the context", "cv", "cva",
           "video_or_idm", "uniform", "video_then_actions", ("policy", "inverse_dynamics", "video"), 10, None,
           "frames planned first from the instruction, then actions from the context and the plan by an "
           "instruction-blind inverse dynamics", idm_reads_text=False),
    Recipe("self-label", "VPT's inverse-dynamics labels inside one WAM, with UWM's modality dropout", "cva", "cva",
           "modality_dropout", "uniform", "together", MODES, 10, 1,
           "one model, a kind of sample per mode (policy beside pure-noise frames, a task-blind IDM on clean frames, "
           "video, world model); midway its IDM labels the action-free video, on which the policy then trains",
           idm_reads_text=False, state_dropout=0.3, plans_video_only=True, labels_video=True),
    Recipe("cosmos-policy", "Cosmos Policy (actions, future state and value as extra latent frames)", "cva", "cva",
           "shared", "uniform", "together", ("policy",), 10, None,
           "a pretrained Cosmos video model unchanged: actions, future state and value written into latent frames"),
    Recipe("action-only", "VLA-style baseline (no video prediction)", "c", "ca", "action_only", "uniform", "together",
           ("policy",), 10, 0, "the same backbone, inputs and budget without future frames"),
    Recipe("vla", "π0, SmolVLA (VLM prefix, flow-matching action expert)", "c", "ca", "action_only", "uniform",
           "together", ("policy",), 10, 0,
           "a VLM reads the images and the instruction; an action expert reads its layers and the robot state"),
    Recipe("hybrid-foresight", "VLA with foresight (future frames as a second output)", "cva", "ca", "independent",
           "uniform", "together", ("policy", "world_model", "video"), 10, 0,
           "the VLA's expert also denoises the future frames (trained jointly); the actions never read them, so "
           "inference skips them unless asked (--sampler.video-steps)"),
    Recipe("hybrid-mot", "LingBot-VA / Fast-WAM mixture of transformers, on a VLM prefix", "cv", "cva", "independent",
           "noisy", "together", ("policy", "video"), 10, 1,
           "a video stream and a narrow action stream with their own weights and one attention, both reading the "
           "VLM's layers; the video stream runs once per chunk, the action stream at every step"),
    Recipe("world-model", "an action-conditioned video model alone (the world simulator a judge rolls policies in)",
           "cva", "ca", "world", "uniform", "together", ("world_model", "video"), 10, None,
           "no policy: every labelled sample predicts the frames from the context and clean actions, blind to the "
           "instruction; action-free samples train the video mode", world_reads_text=False),
]}

# Why a recipe cannot serve a mode (shown instead of returning noise).
_WHY_NOT = {
    ("joint", "world_model"): "frames and actions always shared one noise level in training, never clean actions with noisy frames",
    ("joint", "inverse_dynamics"): "frames and actions always shared one noise level in training, never clean frames with noisy actions",
    ("joint", "video"): "frames were never denoised with the actions absent",
    ("video-then-idm", "world_model"): "its future-frame tokens never read the actions",
    ("features", "world_model"): "its future-frame tokens never read the actions",
    ("features", "inverse_dynamics"): "its action decoder was trained on frame features at high noise, not on clean frames",
    ("plan-then-act", "world_model"): "its future-frame tokens never read the actions",
    ("hybrid-foresight", "inverse_dynamics"): "its action tokens never read the frames",
    ("hybrid-mot", "world_model"): "its future-frame tokens never read the actions",
    ("hybrid-mot", "inverse_dynamics"): "its action stream was trained on frames at high noise, not on clean frames",
    ("world-model", "policy"): "it is a world model alone: its actions were always given, never denoised",
    ("world-model", "inverse_dynamics"): "it is a world model alone: its actions were always given, never denoised",
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes are: {', '.join(RECIPES)}")
    return RECIPES[name]


def check_mode(name: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes are: {', '.join(MODES)}")
    r = recipe(name)
    if mode not in r.modes:
        why = _WHY_NOT.get((name, mode), "it predicts no future frames")
        raise ValueError(f"a {name!r} checkpoint cannot serve mode {mode!r}: {why}. "
                         f"It serves: {', '.join(r.modes)}")


def action_reads(name: str, actions_see_frames: bool = True) -> str:
    """The token groups the recipe's action tokens read ("c", "v", "a"), without the frames under
    --model.actions-see-frames False."""
    reads = recipe(name).action_reads
    return reads if actions_see_frames else reads.replace("v", "")


def attention_mask(name: str, groups: torch.Tensor, actions_see_frames: bool = True) -> torch.Tensor:
    """allowed[i, j]: token i may attend to token j, for a sequence whose token groups are `groups`
    (0 context, 1 frames, 2 actions). Context tokens read only the context."""
    r = recipe(name)
    reads = {0: "c", 1: r.video_reads, 2: action_reads(name, actions_see_frames)}
    letter = "cva"
    table = torch.tensor([[letter[j] in reads[i] for j in range(3)] for i in range(3)])
    return table[groups[:, None], groups[None, :]]


def _noisy(b: int, g: torch.Generator | None) -> torch.Tensor:
    """Beta(1, 3): density 3 (1 - t)^2, mean 0.25, most mass near pure noise (t = 0)."""
    return 1 - torch.rand(b, generator=g) ** (1 / 3)


def draw_times(name: str, b: int, g: torch.Generator | None = None,
               labelled: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Training noise levels and loss weights: (t_video, t_action, w_video, w_action), each (b,). `labelled` (b,)
    bool: samples with actions; one without (action-free video) always trains the frames where a recipe chooses."""
    r = recipe(name)
    ones = torch.ones(b)
    t_v = torch.rand(b, generator=g) if r.t_video == "uniform" else _noisy(b, g)
    t_a = torch.rand(b, generator=g)
    w_v, w_a = ones.clone(), ones.clone()
    if r.noise == "shared":
        t_a = t_v.clone()
    elif r.noise == "video_or_idm":
        # Half the samples train the video model (actions absent), half the inverse dynamics (frames given).
        idm = torch.rand(b, generator=g) < 0.5
        if labelled is not None:  # action-free video has no actions to decode: it trains the video model
            idm &= labelled.bool().cpu()
        t_v = torch.where(idm, ones, t_v)
        t_a = torch.where(idm, t_a, torch.zeros(b))
        w_v, w_a = (~idm).float(), idm.float()
    elif r.noise == "modality_dropout":
        # UWM's modality dropout, one kind of sample each: half train the policy with the frames absent (t_v = 0: the
        # actions are denoised beside pure-noise frames, which learn the one-step frame prediction), a quarter the
        # inverse dynamics (frames clean), an eighth the video model (actions absent) and an eighth the world model
        # (actions clean). Action-free samples train the video model.
        kind = torch.rand(b, generator=g)
        policy, idm = kind < 0.5, (kind >= 0.5) & (kind < 0.75)
        video, world = (kind >= 0.75) & (kind < 0.875), kind >= 0.875
        if labelled is not None:
            free = ~labelled.bool().cpu()
            policy, idm, world, video = policy & ~free, idm & ~free, world & ~free, video | free
        t_v = torch.where(policy, torch.zeros(b), torch.where(idm, ones, t_v))
        t_a = torch.where(video, torch.zeros(b), torch.where(world, ones, t_a))
        w_v, w_a = (~idm).float(), (policy | idm).float()
    elif r.noise == "action_only":
        w_v = torch.zeros(b)
    elif r.noise == "world":
        # The world model alone: labelled samples give the actions clean, action-free ones leave them absent (the
        # video mode); no action loss.
        given = torch.ones(b, dtype=torch.bool) if labelled is None else labelled.bool().cpu()
        t_a, w_a = given.float(), torch.zeros(b)
    return t_v, t_a, w_v, w_a


OWN = tuple(n for n in RECIPES if n in BACKBONES["wam"].recipes)
"""The recipes our own transformer (backbone "wam") trains, in the order of RECIPES (backbones.py says which)."""
OWN_POLICIES = tuple(n for n in OWN if "policy" in RECIPES[n].modes)
"""Those of OWN that make a policy (all but world-model)."""
