"""self-label: a WAM's own task-blind inverse dynamics labels its action-free video mid-training (label.py), with
UWM's modality dropout and state dropout in training; labelling is what the IDM decodes, it covers exactly the
action-free frames, and a run resumed on either side of the labelling step is the same run."""

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from wam import label, modes
from wam.config import DataConfig, preset, with_recipe
from wam.data.frames import open_frames
from wam.data.reader import read_dataset, split, usable_stats
from wam.data.transforms import Normalizer
from wam.data.windows import Windows
from wam.models.transformer import WAMTransformer
from wam.recipes import draw_times, recipe
from wam.testing import concrete, fake_batch
from wam.train import loss_terms, train

NAME = "self-label"
P = concrete(with_recipe(preset("tiny"), NAME))
VIDEO = DataConfig(video_only_episodes="1,3")  # one episode of each of the tiny dataset's two tasks as video


def _model(seed: int = 0) -> WAMTransformer:
    torch.manual_seed(seed)
    model = WAMTransformer(P.model)
    with torch.no_grad():  # off the adaLN-Zero start, so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_modality_dropout_draws_one_mode_per_sample():
    n = 40_000
    labelled = torch.arange(n) % 4 != 0  # a quarter action-free
    t_v, t_a, w_v, w_a = draw_times(NAME, n, torch.Generator().manual_seed(0), labelled)
    policy = (t_v == 0) & (w_v == 1) & (w_a == 1)  # actions beside pure-noise frames, which learn their one-step guess
    idm = (t_v == 1) & (w_v == 0) & (w_a == 1)
    video = (t_a == 0) & (w_a == 0) & (w_v == 1)
    world = (t_a == 1) & (w_a == 0) & (w_v == 1)
    assert (policy.int() + idm.int() + video.int() + world.int() == 1).all()  # every sample is one of them
    assert video[~labelled].all()  # action-free samples only train the frames
    for kind, share in ((policy, 0.5), (idm, 0.25), (video, 0.125), (world, 0.125)):
        assert abs(kind[labelled].float().mean() - share) < 0.015
    assert abs(t_a[policy | idm].mean() - 0.5) < 0.02 and abs(t_v[video | world].mean() - 0.5) < 0.02


def test_the_inverse_dynamics_is_blind_to_the_task_and_the_policy_is_not():
    model = _model()
    batch = fake_batch(P.model, 2)
    other = dataclasses.replace(batch.context, text=torch.randn_like(batch.context.text))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    _, a1 = modes.run(model, "inverse_dynamics", batch.context, P.sampler, video=batch.video, generator=g())
    _, a2 = modes.run(model, "inverse_dynamics", other, P.sampler, video=batch.video, generator=g())
    assert torch.equal(a1, a2)
    _, p1 = modes.run(model, "policy", batch.context, P.sampler, generator=g())
    _, p2 = modes.run(model, "policy", other, P.sampler, generator=g())
    assert not torch.allclose(p1, p2, atol=1e-4)  # the policy reads the instruction
    # in training the IDM samples' loss does not depend on the instruction; the others' does
    b = 64
    big = fake_batch(P.model, b)
    moved = dataclasses.replace(big, context=dataclasses.replace(big.context, text=torch.randn_like(big.context.text)))
    t_v, _, w_v, w_a = draw_times(NAME, b, torch.Generator().manual_seed(5), big.has_actions)
    idm = (t_v == 1) & (w_a > 0)
    assert idm.any() and (~idm).any()
    seen = []

    class Spy(torch.nn.Module):  # records the context each loss is computed on
        def __init__(self):
            super().__init__()
            self.net = model
            self.capabilities = model.capabilities

        def forward(self, *args):
            seen.append(args[-1])
            return self.net(*args)

    cfg = replace(P.train)
    for b_ in (big, moved):
        loss_terms(Spy(), b_, cfg, P.model, torch.Generator().manual_seed(5))
    assert (seen[0].text[idm] == 0).all() and torch.equal(seen[0].text[~idm], big.context.text[~idm])
    assert torch.equal(seen[0].text[idm], seen[1].text[idm])
    assert torch.equal(seen[1].text[~idm], moved.context.text[~idm])  # the other modes read the instruction given
    # state dropout: about 30% of the samples train without the state
    known = seen[0].state_known
    assert known is not None and 0.1 < 1 - known.float().mean() < 0.5 and set(known.tolist()) <= {0.0, 1.0}


def _windows(tiny_dataset, model_cfg):
    rec, _ = split(read_dataset(tiny_dataset, VIDEO))
    m = model_cfg.for_data(rec.camera_names, rec.state.shape[1], rec.action.shape[1]).resolved()
    rec, store = open_frames(rec, m.image_size, progress=False)
    norm = Normalizer.from_stats(usable_stats(rec, VIDEO))
    text = torch.zeros(len(rec.instructions), m.text_dim)
    return Windows(rec, store, m, norm, text), m


def test_labels_are_the_inverse_dynamics_actions_on_every_action_free_frame(tiny_dataset):
    windows, m = _windows(tiny_dataset, P.model)
    torch.manual_seed(0)
    model = WAMTransformer(m)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    free = ~windows.labelled.numpy()
    labels = label.label_video(model, windows, P.sampler, batch_size=7, progress=False)
    covered = np.zeros(windows.n, bool)
    for lo, a in labels.items():
        covered[lo:lo + len(a)] = True
        assert a.shape[1] == m.action_dim and np.isfinite(a).all()
        assert (a >= windows.norm.action_min.numpy() - 1e-6).all() and (a <= windows.norm.action_max.numpy() + 1e-6).all()
    assert (covered == free).all() and len(labels) == 2
    # the first window of an episode: its first `stride` labels are what inverse_dynamics decodes there
    lo = min(labels)
    stride = label.label_stride(windows)
    batch = windows.get(np.array([lo]))
    _, a = modes.run(model, "inverse_dynamics", batch.context, replace(P.sampler, steps=1), video=batch.video,
                     generator=torch.Generator().manual_seed(0))
    want = torch.clamp(windows.norm.unactions(a[0, :stride]), windows.norm.action_min, windows.norm.action_max)
    assert np.allclose(labels[lo][:stride], want.numpy(), atol=1e-5)
    # applied: the episodes train the actions from now on, still without their state
    before = windows.get(np.flatnonzero(free)[:3])
    n = label.apply_labels(windows, labels)
    after = windows.get(np.flatnonzero(free)[:3])
    assert n == free.sum() and windows.labelled.all() and after.has_actions.all() and not before.has_actions.any()
    assert (after.context.state_known == 0).all()
    with pytest.raises(ValueError, match="do not match an episode"):
        label.apply_labels(windows, {lo + 1: labels[lo]})


class _Interrupt(Exception):
    pass


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.parametrize("cut,every", [(2, 2), (3, 3), (4, 2)])  # (3, 3): stopped at the labelling step's checkpoint
def test_training_labels_its_video_once_and_resumes_on_either_side_exactly(tiny_dataset, tmp_path, cut, every):
    cfg = replace(P.train, data=tiny_dataset, steps=6, ckpt_every=every, log_every=1, label_at=0.5)
    full = tmp_path / "full"
    train(replace(cfg, out=full), P.model, P.sampler, data=VIDEO, progress=False)
    assert [f.name for f in (full / "labels").iterdir()] == ["step-3.npz"]

    def interrupt(step, ckpt):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        train(replace(cfg, out=tmp_path / "cut", eval_every=cut), P.model, P.sampler, data=VIDEO, progress=False,
              eval_hook=interrupt)
    assert (tmp_path / "cut/labels/step-3.npz").exists() == (cut > 3)
    train(replace(cfg, out=tmp_path / "cut"), P.model, P.sampler, data=VIDEO, progress=False)
    a, b = _losses(full), _losses(tmp_path / "cut")
    assert set(a) == set(b) == set(range(1, 7))
    assert all(a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-7) for s in a)
    la, lb = label.load_labels(full / "labels/step-3.npz"), label.load_labels(tmp_path / "cut/labels/step-3.npz")
    assert la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)
    # a recipe that does not label, or --train.label-at None, trains on the video's frames only
    train(replace(cfg, out=tmp_path / "never", label_at=None), P.model, P.sampler, data=VIDEO, progress=False)
    assert not (tmp_path / "never/labels").exists()
    assert recipe(NAME).labels_video and not recipe("decoupled").labels_video


def test_label_error_meets_its_closed_form():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(50, 4)).astype(np.float32)
    exact = {0: truth[:20], 30: truth[30:50]}
    e = label.label_error(exact, truth)
    assert e["frames"] == 40 and e["mse"] == 0 and e["r2"] == 1
    idx = np.r_[0:20, 30:50]
    mean = {0: np.tile(truth[idx].mean(0), (20, 1)), 30: np.tile(truth[idx].mean(0), (20, 1))}
    assert abs(label.label_error(mean, truth)["r2"]) < 1e-5  # guessing the mean scores 0


def test_plan_is_the_video_mode_then_the_inverse_dynamics_on_its_frames():
    model = _model()
    batch = fake_batch(P.model, 2)
    noise = (torch.randn(model.video_shape(2)), torch.randn(batch.actions.shape))
    frames, actions = modes.plan(model, batch.context, P.sampler, noise=noise)
    want_f, _ = modes.run(model, "video", batch.context, P.sampler, noise=(noise[0], torch.zeros_like(noise[1])))
    _, want_a = modes.run(model, "inverse_dynamics", batch.context, P.sampler, video=want_f,
                          noise=(torch.zeros_like(noise[0]), noise[1]))
    assert torch.equal(frames, want_f) and torch.equal(actions, want_a)
    _, direct = modes.run(model, "policy", batch.context, P.sampler, noise=noise)
    assert not torch.allclose(direct, actions, atol=1e-4)


def test_the_policy_plans_the_instructions_it_saw_only_in_video(tmp_path):
    """sampler.plan auto: prompts whose nearest training instruction was seen only in video act through modes.plan,
    the others directly; a mixed batch gives each request what it gets alone; never / always override."""
    from wam.config import SamplerConfig
    from wam.data.transforms import Normalizer
    from wam.policy import WAMPolicy
    from wam.testing import fake_observation

    model = _model()
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    config = {"data": {"instructions": ["close the drawer", "press the button from the top"],
                       "video_only_instructions": ["press the button from the top"]}}

    def policy(plan="auto"):
        return WAMPolicy(model, norm, config, replace(P.sampler, plan=plan), seed=0)

    auto = policy()
    assert auto.plans(["close the drawer", "press the button from the top", "push the button down from above"]).tolist() \
        == [False, True, True]  # a rewording goes where its task went
    assert policy("never").plans(["press the button from the top"]).tolist() == [False]
    assert policy("always").plans(["close the drawer"]).tolist() == [True]
    obs = [fake_observation(auto.metadata, seed=s, prompt=p) for s, p in ((0, "close the drawer"),
                                                                           (1, "press the button from the top"))]
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    alone = [auto.infer_batch([o], [g()])[0].actions for o in obs]
    mixed = auto.infer_batch(obs, [g(), g()])
    assert all(np.allclose(m.actions, a, atol=1e-5) for m, a in zip(mixed, alone))
    direct = policy("never").infer_batch([obs[1]], [g()])[0].actions
    planned = policy("always").infer_batch([obs[1]], [g()])[0].actions
    assert np.allclose(alone[1], planned, atol=1e-5) and not np.allclose(alone[1], direct, atol=1e-4)
    with pytest.raises(ValueError, match="does not serve the 'video' mode"):
        action_only = with_recipe(preset("tiny"), "action-only")
        WAMPolicy(WAMTransformer(concrete(action_only).model), norm, config, replace(action_only.sampler, plan="always"))


def test_the_checkpoint_records_which_instructions_it_saw_only_in_video(tiny_dataset):
    from wam.train import video_only_instructions

    rec = read_dataset(tiny_dataset, DataConfig())
    by_task = {t: [e for e, u in enumerate(rec.env_tasks) if u == t] for t in dict.fromkeys(rec.env_tasks)}
    video_task, other = list(by_task)
    assert video_only_instructions(rec) == []
    only = read_dataset(tiny_dataset, DataConfig(video_only_episodes=",".join(map(str, by_task[video_task]))))
    mixed = read_dataset(tiny_dataset, DataConfig(video_only_episodes=str(by_task[video_task][0])))
    instruction = only.instructions[int(only.task_index[only.episode_from[by_task[video_task][0]]])]
    assert video_only_instructions(only) == [instruction] and video_only_instructions(mixed) == []


def test_video_share_draws_that_fraction_of_each_batch_from_the_action_free_frames(tiny_dataset):
    from wam.data.loader import StepBatches

    win, _ = _windows(tiny_dataset, P.model)
    free = win.from_video.float().mean().item()
    assert 0.2 < free < 0.8  # one episode of each task's two is video
    share = lambda data: np.mean([(~data[s][0].has_actions).float().mean().item() for s in range(12)])  # noqa: E731
    assert abs(share(StepBatches(win, 64, 0, seed=0)) - free) < 0.07  # None: in proportion to the frames
    balanced = StepBatches(win, 64, 0, seed=0, video_share=0.9)
    assert abs(share(balanced) - 0.9) < 0.05
    assert torch.equal(balanced[3][0].actions, balanced[3][0].actions)  # a step's batch is a function of the step
    win.labelled[:] = True  # labelled by the model: still drawn as video, at the share
    assert torch.equal(StepBatches(win, 64, 0, seed=0, video_share=0.9).groups[0], torch.nonzero(win.from_video).flatten())
    with pytest.raises(ValueError, match="video_share"):
        replace(P.train, video_share=1.0)


def test_video_first_trains_the_frames_alone_then_actions_and_frames(tiny_dataset, tmp_path):
    p = concrete(with_recipe(preset("tiny"), "decoupled"))
    cfg = replace(p.train, data=tiny_dataset, steps=4, log_every=1, ckpt_every=4, video_first=0.5)
    train(replace(cfg, out=tmp_path / "vf"), p.model, p.sampler, progress=False)
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "vf/metrics.jsonl").read_text().splitlines()) if "loss" in r}
    assert [rows[s]["action"] == 0 for s in (1, 2, 3, 4)] == [True, True, False, False]
    assert all(rows[s]["video"] > 0 for s in rows)
    # no action term; the environment-state target (on by default: the tiny data records it, weight 1.0) stays on
    assert rows[1]["loss"] == pytest.approx(p.train.video_weight * rows[1]["video"] + rows[1]["environment"])
    with pytest.raises(ValueError, match="predicts none"):
        a = concrete(with_recipe(preset("tiny"), "action-only"))
        train(replace(cfg, out=tmp_path / "a"), a.model, a.sampler, progress=False)
    with pytest.raises(ValueError, match="after the labelling"):
        train(replace(P.train, data=tiny_dataset, steps=4, video_first=0.75, label_at=0.5, out=tmp_path / "s"),
              P.model, P.sampler, data=VIDEO, progress=False)
    with pytest.raises(ValueError, match="video_first"):
        replace(cfg, video_first=1.0)
