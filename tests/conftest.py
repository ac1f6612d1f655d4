import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def cli_error(capsys):
    """Run `wam ARGV` as a user's mistake: it must exit with status 2 and print one line, `error: ...`; returns it."""
    from wam.cli import main

    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    return run


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Two real scripted episodes each of two tasks, at the tiny preset's cameras and size."""
    from wam.data.collect import CollectConfig, collect
    from wam.config import preset
    from wam.testing import concrete

    m = concrete(preset("tiny")).model
    root = tmp_path_factory.mktemp("data") / "tiny"
    return collect(CollectConfig(out=root, tasks="drawer-close-v3,button-press-topdown-v3", episodes=2,
                                 cameras=m.cameras, image_size=m.image_size, workers=1), progress=False)
