"""--train.pose-labels (pose_label.py): action-free video labelled through the arm's pose estimated from its frames.
The labels cover exactly the action-free episodes; on data whose frames show the state, they recover the state and
the actions, better with the state IDM fitted at the video's jitter on smoothed states; training labels before its
first step, for any recipe, and a resumed run reads the same labels back."""

import functools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from wam import pose_label
from wam.config import DataConfig, preset, with_recipe
from wam.data.frames import open_frames
from wam.data.reader import read_dataset, split, usable_stats
from wam.data.transforms import Normalizer
from wam.data.windows import Windows
from wam.testing import concrete, synthetic_dataset
from wam.train import train

VIDEO = DataConfig(video_only_episodes="1,3")


def _windows(root, recipe_name="action-only", data=VIDEO):
    p = concrete(with_recipe(preset("tiny"), recipe_name))
    rec, _ = split(read_dataset(root, data))
    m = replace(p.model, cameras=()).for_data(rec.camera_names, rec.state.shape[1], rec.action.shape[1]).resolved()
    rec, store = open_frames(rec, m.image_size, progress=False)
    norm = Normalizer.from_stats(usable_stats(rec, data))
    return Windows(rec, store, m, norm, torch.zeros(len(rec.instructions), m.text_dim))


def test_state_features_are_positions_relative_to_the_frame_clamped_to_its_episode():
    states = torch.tensor([[0.0, 0, 0, 5], [1, 0, 0, 6], [3, 0, 0, 7], [10, 0, 0, 8], [20, 0, 0, 9]])
    ep_from, ep_to = np.array([0, 0, 0, 3, 3]), np.array([3, 3, 3, 5, 5])
    f = pose_label.state_features(states, ep_from, ep_to).view(5, len(pose_label.OFFSETS), 4)
    k = {w: i for i, w in enumerate(pose_label.OFFSETS)}
    assert f[1, k[1], 0] == 2 and f[1, k[-1], 0] == -1 and f[1, k[0], 0] == 0  # relative x
    assert f[2, k[5], 0] == 0 and f[0, k[-2], 0] == 0  # clamped to the first episode's ends
    assert f[3, k[-1], 0] == 0 and f[3, k[1], 0] == 10  # the second episode never reads the first
    assert f[1, k[1], 3] == 7  # the gripper as it is


def test_smoothing_averages_each_episode_over_time_and_never_reads_another():
    states = torch.tensor([[0.0, 1], [0, 1], [6, 1], [0, 1], [0, 1], [100, 5], [100, 5], [100, 5]])
    ep_from, ep_to = np.array([0] * 5 + [5] * 3), np.array([5] * 5 + [8] * 3)
    assert torch.equal(pose_label.smooth_states(states, ep_from, ep_to, 0), states)
    got = pose_label.smooth_states(states, ep_from, ep_to, 1.0)
    assert torch.allclose(got[:5].sum(0)[1], torch.tensor(5.0)) and torch.allclose(got[5:], states[5:])  # constants kept
    assert got[2, 0] < 6 and (got[[1, 3], 0] > 0).all()  # the spike spread to its neighbours, its mass kept nearby
    assert got[4, 0] < got[3, 0] < got[2, 0] and got[:5, 0].max() < 100  # the second episode is never read
    assert torch.allclose(got[:, 0].flip(0)[3:], pose_label.smooth_states(states[:5].flip(0), ep_from[:5], ep_to[:5], 1.0)[:, 0])


def test_pose_labels_recover_the_state_and_actions_the_frames_show(tmp_path):
    # the synthetic square: state[:2] is its position in the frame, action[:2] its velocity (wam.testing)
    root = synthetic_dataset(tmp_path / "square", episodes=16, length=30, cameras={"front": (32, 32), "side": (32, 32)},
                             tasks=2, fps=10)
    data = DataConfig(video_only_episodes="1,6,11")
    windows = _windows(root, data=data)
    free = ~windows.labelled.numpy()
    truth_a, truth_s = windows.actions.clone(), windows.state.clone()
    rec = read_dataset(root, DataConfig())  # the hidden truth of the action-free episodes
    labels = pose_label.fit_and_label(windows, steps=300, size=16, width=16, idm_steps=600, progress=False)
    covered = np.zeros(windows.n, bool)
    for lo, a in labels.actions.items():
        covered[lo:lo + len(a)] = True
        assert a.shape == (len(labels.states[lo]), windows.actions.shape[1]) and np.isfinite(a).all()
        assert (a >= windows.norm.action_min.numpy() - 1e-6).all() and (a <= windows.norm.action_max.numpy() + 1e-6).all()
    assert (covered == free).all() and len(labels.actions) == 3
    assert (truth_a[free] == 0).all()  # the reader hid them
    got_s = np.concatenate([labels.states[lo] for lo in sorted(labels.states)])[:, :2]
    got_a = np.concatenate([labels.actions[lo] for lo in sorted(labels.actions)])[:, :2]
    want_s, want_a = rec.state[free][:, :2], rec.action[free][:, :2]
    r2 = lambda got, want: 1 - ((got - want) ** 2).mean(0) / want.var(0)  # noqa: E731
    assert (r2(got_s, want_s) > 0.8).all(), r2(got_s, want_s)
    assert (r2(got_a, want_a) > 0.3).all(), r2(got_a, want_a)
    # the estimator gives its training frames back nearly exact and the video's with noise: an IDM fitted on the former
    # (match_jitter off, smooth 0: the labeller's first version; same seed, so the same estimator) labels worse
    before = pose_label.fit_and_label(_windows(root, data=data), steps=300, size=16, width=16, idm_steps=600,
                                      match_jitter=False, smooth=0.0, progress=False)
    got_before = np.concatenate([before.actions[lo] for lo in sorted(before.actions)])[:, :2]
    assert r2(got_a, want_a).mean() > r2(got_before, want_a).mean() + 0.1, (r2(got_a, want_a), r2(got_before, want_a))
    # applied: the episodes train as demonstrations with the estimated state, known
    n = pose_label.apply(windows, labels)
    batch = windows.get(np.flatnonzero(free)[:4])
    assert n == free.sum() and windows.labelled.all() and batch.has_actions.all()
    assert (batch.context.state_known == 1).all()
    assert torch.allclose(windows.state[free][:, :2], torch.from_numpy(got_s))
    assert torch.equal(windows.state[~free], truth_s[~free])  # the demonstrations keep their own


def test_pose_labels_refuse_data_without_a_labelled_episode(tiny_dataset):
    windows = _windows(tiny_dataset, data=DataConfig(video_only_episodes="0,1,2,3"))
    with pytest.raises(ValueError, match="every episode is action-free"):
        pose_label.fit_and_label(windows, steps=1, idm_steps=1, progress=False)
    assert pose_label.fit_and_label(_windows(tiny_dataset, data=DataConfig()), steps=1, progress=False).actions == {}


class _Interrupt(Exception):
    pass


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.parametrize("name", ["action-only", "self-label"])
def test_training_labels_before_its_first_step_and_a_resumed_run_reads_the_labels_back(tiny_dataset, tmp_path, name):
    p = concrete(with_recipe(preset("tiny"), name))
    cfg = replace(p.train, data=tiny_dataset, steps=4, ckpt_every=2, log_every=1, pose_labels=True)
    full = tmp_path / "full"
    train(replace(cfg, out=full), p.model, p.sampler, data=VIDEO, progress=False)
    # the recipe's own labelling (self-label's, mid-training) finds every episode labelled already
    assert sorted(f.name for f in (full / "labels").iterdir()) == ["pose.npz"]
    labels = pose_label.load(full / "labels/pose.npz")
    assert len(labels.actions) == len(labels.states) == 2

    def interrupt(step, ckpt):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        train(replace(cfg, out=tmp_path / "cut", eval_every=2), p.model, p.sampler, data=VIDEO, progress=False,
              eval_hook=interrupt)
    train(replace(cfg, out=tmp_path / "cut"), p.model, p.sampler, data=VIDEO, progress=False)
    a, b = _losses(full), _losses(tmp_path / "cut")
    assert set(a) == set(b) == set(range(1, 5))
    assert all(a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-7) for s in a)
    back = pose_label.load(tmp_path / "cut/labels/pose.npz")
    assert all(np.array_equal(back.actions[k], labels.actions[k]) for k in labels.actions)


def test_runs_on_the_same_data_share_their_labels_and_any_change_of_data_or_settings_fits_again(tiny_dataset, tmp_path,
                                                                                                 monkeypatch):
    """--train.pose-label-cache: a second run (another recipe) on the same data with the same labelling settings reads
    the first run's labels instead of fitting the labeller again; another smoothing, another seed or another labelled
    action gives another key."""
    p = concrete(with_recipe(preset("tiny"), "action-only"))
    cache = tmp_path / "shared"
    cfg = replace(p.train, data=tiny_dataset, steps=2, ckpt_every=2, log_every=1, pose_labels=True,
                  pose_label_cache=str(cache))
    train(replace(cfg, out=tmp_path / "first"), p.model, p.sampler, data=VIDEO, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1
    first = pose_label.load(tmp_path / "first/labels/pose.npz")

    fitted = []
    fit = pose_label.fit_and_label

    @functools.wraps(fit)  # labelling_key reads its signature
    def counted(*a, **k):
        fitted.append(k)
        return fit(*a, **k)

    monkeypatch.setattr(pose_label, "fit_and_label", counted)
    q = concrete(with_recipe(preset("tiny"), "self-label"))  # another recipe, the same data
    train(replace(q.train, **{k: getattr(cfg, k) for k in ("data", "steps", "ckpt_every", "pose_labels",
                                                           "pose_label_cache")}, out=tmp_path / "second"),
          q.model, q.sampler, data=VIDEO, progress=False)
    assert fitted == []
    second = pose_label.load(tmp_path / "second/labels/pose.npz")
    assert all(np.array_equal(second.actions[k], first.actions[k]) for k in first.actions)

    train(replace(cfg, out=tmp_path / "smoother", pose_label_smooth=cfg.pose_label_smooth + 1), p.model, p.sampler,
          data=VIDEO, progress=False)
    assert len(fitted) == 1 and len(list(cache.glob("*.npz"))) == 2

    w = _windows(tiny_dataset)
    key = pose_label.labelling_key(w, steps=4, seed=0)
    assert key == pose_label.labelling_key(_windows(tiny_dataset), steps=4, seed=0)
    assert key != pose_label.labelling_key(w, steps=4, seed=1) != pose_label.labelling_key(w, steps=5, seed=0)
    assert key == pose_label.labelling_key(w, steps=4, seed=0, smooth=2.0)  # a default named or not: the same run
    w.actions[int(np.flatnonzero(w.labelled.numpy())[0])] += 0.5
    assert pose_label.labelling_key(w, steps=4, seed=0) != key
    with pytest.raises(TypeError, match="no setting"):
        pose_label.labelling_key(w, stpes=4)
