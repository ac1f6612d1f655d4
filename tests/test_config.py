"""Configs are parsed once: presets as subcommands, --recipe/--backbone/--backbone-path as aliases, a recipe's and a
backbone's consequences resolved from the final config in any flag order; `wam eval`'s sampler overrides."""

import dataclasses

import pytest
import tyro

from wam.cli import train_command
from wam.config import PRESETS, SamplerConfig, apply, field_docs
from wam.evaluate import EvalConfig, SamplerOverrides
from wam.testing import save_tiny, skip_without_pretrained


def _resolved(argv):
    cmd = train_command(argv)
    model = cmd.model.resolved()
    return model, cmd.sampler.resolve(model.recipe)


def test_recipe_alias_and_field_give_the_same_config_and_sampler():
    short, long = _resolved(["--recipe", "flash"]), _resolved(["--model.recipe", "flash"])
    assert short == long
    model, sampler = short
    assert model.recipe == "flash" and (sampler.steps, sampler.video_steps) == (4, 1)  # the recipe's own counts
    assert _resolved([])[1].steps == 10 and _resolved([])[1].video_steps == 10  # the default preset: decoupled, 10/10
    # an explicit value (a preset's or a flag's) wins over the recipe's default
    assert _resolved(["tiny", "--recipe", "flash"])[1].steps == 2
    assert _resolved(["--recipe", "flash", "--sampler.steps", "3"])[1].steps == 3
    assert _resolved(["--recipe", "action-only"])[0].future_frames == 0


@pytest.mark.parametrize("argv", [["--preset", "tiny", "--recipe", "joint"], ["--recipe", "joint", "--preset", "tiny"],
                                  ["--recipe", "joint", "--preset=tiny"], ["tiny", "--recipe", "joint"],
                                  ["tiny", "--model.recipe", "joint"]])
def test_any_order_of_preset_and_recipe_describes_the_same_run(argv):
    model, sampler = _resolved(argv)
    assert model == dataclasses.replace(PRESETS["tiny"].model, recipe="joint").resolved()
    assert (sampler.steps, sampler.execute) == (2, 2)


def test_presets_are_subcommands_and_the_default_needs_none():
    assert train_command(["--train.steps", "7"]).train.steps == 7
    assert train_command(["--train.steps", "7"]).model == PRESETS["default"].model
    assert train_command(["tiny"]).model == PRESETS["tiny"].model
    assert train_command(["--preset", "tiny"]) == train_command(["tiny"])  # the old spelling


def test_cosmos_with_its_recipe_named_explicitly_in_any_order(tmp_path):
    skip_without_pretrained()
    folder = str(save_tiny(tmp_path / "cosmos", "cosmos"))
    for argv in (["--backbone", "cosmos", "--backbone-path", folder, "--recipe", "cosmos-policy"],
                 ["--recipe", "cosmos-policy", "--backbone-path", folder, "--preset", "tiny", "--backbone", "cosmos"],
                 ["tiny", "--model.backbone", "cosmos", "--model.backbone-path", folder]):
        model, sampler = _resolved(argv)
        assert (model.backbone, model.recipe, model.backbone_path) == ("cosmos", "cosmos-policy", folder)
        assert (model.video_target, model.action_target) == ("velocity", "velocity") and sampler.steps >= 1


def test_an_invalid_combination_names_the_conflicting_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_command(["tiny", "--backbone", "cosmos", "--backbone-path", "/x", "--recipe", "decoupled"])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "--model.backbone/--backbone cosmos does not go with --model.recipe/--recipe decoupled" in err
    assert "trains cosmos-policy" in err
    with pytest.raises(SystemExit):
        train_command(["--recipe", "magic"])
    assert "valid recipes are: joint, decoupled" in " ".join(capsys.readouterr().err.replace("│", " ").split())


def test_sampler_overrides_come_from_sampler_config_and_keep_what_is_not_given():
    docs = field_docs(SamplerConfig)
    assert set(docs) == {f for f in SamplerConfig.__dataclass_fields__} and "best-of-N" not in docs["steps"]
    saved = SamplerConfig(steps=3, best_of=4, compile=True, decode_frames=False, execute=2)
    got = apply(saved, SamplerOverrides(steps=5, cache=False))
    assert got == SamplerConfig(steps=5, best_of=4, compile=True, decode_frames=False, execute=2, cache=False)
    assert apply(saved, SamplerOverrides()) == saved


def test_old_eval_flags_are_aliases_of_the_sampler_overrides():
    old = tyro.cli(EvalConfig, args=["ck", "--steps", "3", "--video-steps", "0", "--execute", "2", "--no-cache",
                                     "--device", "cuda", "--precision", "bfloat16"])
    new = tyro.cli(EvalConfig, args=["ck", "--sampler.steps", "3", "--sampler.video-steps", "0", "--sampler.execute",
                                     "2", "--sampler.no-cache", "--sampler.device", "cuda", "--sampler.precision",
                                     "bfloat16"])
    assert old == new and old.sampler.cache is False and old.sampler.best_of is None
    cfg = tyro.cli(EvalConfig, args=["ck", "--sampler.compile", "--sampler.best-of", "4", "--backbone-path", "/x"])
    assert (cfg.sampler.compile, cfg.sampler.best_of, str(cfg.backbone_path)) == (True, 4, "/x")
    assert tyro.cli(EvalConfig, args=["ck", "--compile"]).sampler.compile is True  # the README's GPU flag
