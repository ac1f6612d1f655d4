"""Real-time chunking over the wire: the asynchronous chunk executor around a RemotePolicy sends the actions it is
still executing as the guide, the server inpaints the new chunk to agree with them, and the executed actions are
those of the same asynchronous evaluation in process (127.0.0.1 only, every wait bounded)."""

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("websockets", reason="serving needs the extra: pip install 'wam[serve]'")

from wam.checkpoint import read_config  # noqa: E402
from wam.config import SamplerConfig, model_from_dict, preset  # noqa: E402
from wam.envs import make_env  # noqa: E402
from wam.evaluate import EpisodeJob, Worker, WorkerSetup  # noqa: E402
from wam.testing import concrete, RecordingEnv  # noqa: E402


class _Guides:
    """A policy wrapper that keeps the guides its observations carry (what the executor asked the model for)."""

    def __init__(self, policy):
        self.policy, self.guides = policy, []

    @property
    def metadata(self):
        return self.policy.metadata

    def reset(self, seed=None):
        self.policy.reset(seed)

    def infer(self, obs):
        self.guides.append(obs.guide)
        return self.policy.infer(obs)


def test_async_execution_over_the_wire_equals_in_process(tiny_dataset, tmp_path):
    from wam.runtime import closed_loop
    from wam.serve.server import ServeConfig, from_checkpoint, running
    from wam.train import train

    P = concrete(preset("tiny"))
    ckpt = train(replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler, progress=False)
    config = read_config(ckpt)
    sampler = SamplerConfig(**config["sampler"]).resolve(model_from_dict(config["model"]).recipe)
    server = from_checkpoint(ServeConfig(ckpt, port=0))
    executed, guides = [], []
    with running(server) as port:
        for remote in (None, f"ws://127.0.0.1:{port}"):
            worker = Worker(WorkerSetup(str(ckpt), sampler, delay=1, blend=1, remote=remote))
            spy = _Guides(worker.policy)
            worker.runner = closed_loop(spy, sampler.execute, delay=1, blend=1)  # the evaluation's own stack, watched
            env = worker.envs["metaworld:drawer-close-v3", None] = RecordingEnv(
                make_env("metaworld:drawer-close-v3", P.model.cameras, P.model.image_size))
            worker.run(EpisodeJob(env="metaworld:drawer-close-v3", task="drawer-close-v3", seed=100_002, max_steps=9))
            executed.append(np.stack(env.actions))
            guides.append(spy.guides)
            env.close()
    server.close()
    assert worker.policy.metadata.accepts_guide  # the server declares that it inpaints
    local, remote = guides
    assert local[0] is None and all(g is not None for g in local[1:]) and len(local) == len(remote) >= 3
    for a, b in zip(local[1:], remote[1:]):  # the same actions held and pulled, sent over the wire
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)
        np.testing.assert_allclose(a.weights, b.weights)
    assert executed[0].shape == (9, 4) and len({a.tobytes() for a in executed[0]}) > 1
    np.testing.assert_allclose(executed[0], executed[1], atol=1e-6)
