"""The command line: a user's mistake is one line (`error: ...`) and exit status 2; a real bug, `--debug` and
WAM_DEBUG=1 keep the traceback."""

import shutil

import numpy as np
import pytest

from wam import cli
from wam.cli import main


def test_user_mistakes_are_one_line_and_status_2(cli_error, tmp_path, tiny_dataset):
    line = cli_error(["train", "tiny", "--train.data", str(tmp_path / "nope"), "--train.out", str(tmp_path / "r")])
    assert "no dataset at" in line and "wam collect --out" in line
    line = cli_error(["eval", str(tmp_path)])
    assert f"{tmp_path} is not a wam checkpoint" in line
    broken = shutil.copytree(tiny_dataset, tmp_path / "broken")
    (broken / "meta/stats.json").unlink()
    line = cli_error(["train", "tiny", "--train.data", str(broken), "--train.out", str(tmp_path / "r2")])
    assert "stats.json is missing: expected the dataset's statistics" in line
    line = cli_error(["imagine", str(tmp_path / "nope")])
    assert "is not a wam checkpoint" in line
    # a config's own check (its __post_init__) and a value the flag's type refuses: one line too, not tyro's box
    assert "horizon must be >= 1, got 0" in cli_error(["imagine", str(tmp_path), "--horizon", "0"])
    assert "episodes and max_steps must be >= 1" in cli_error(["judge", "a", "--world", "b", "--head", "c", "--episodes", "0"])
    assert cli_error(["judge", "a", "--world", "b", "--head", "c", "--episodes", "zz"]).startswith("error: --episodes: ")
    line = cli_error(["train", "tiny", "--recipe", "world-model", "--train.data", str(tiny_dataset), "--train.out",
                      str(tmp_path / "w"), "--train.eval-every", "1", "--train.steps", "2"])
    assert "recipe 'world-model' makes none" in line


def test_debug_and_wam_debug_show_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a wam checkpoint"):
        main(["eval", str(tmp_path), "--debug"])
    monkeypatch.setenv("WAM_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="not a wam checkpoint"):
        main(["eval", str(tmp_path)])


def test_a_real_bug_keeps_its_traceback(monkeypatch):
    def typo(argv):
        raise TypeError("a bug")

    def outside(argv):
        np.zeros(-1)  # a ValueError raised inside numpy, not by wam: not a message meant for the user

    monkeypatch.setitem(cli.COMMANDS, "eval", typo)
    with pytest.raises(TypeError, match="a bug"):
        main(["eval", "x"])
    monkeypatch.setitem(cli.COMMANDS, "eval", outside)
    with pytest.raises(ValueError, match="negative dimensions"):
        main(["eval", "x"])


@pytest.mark.slow
def test_demo_on_the_tiny_preset_prints_its_times_throughput_and_machine_speed(tmp_path, capsys):
    import json

    main(["demo", "--preset", "tiny", "--episodes", "1", "--workers", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "stage times: collect" in out and "training throughput:" in out and "GFLOP/s fp32 matmul on" in out
    timing = json.loads((tmp_path / "eval/timing.json").read_text())
    assert timing["train_samples_per_s"] > 0 and timing["machine_gflops"] > 0
