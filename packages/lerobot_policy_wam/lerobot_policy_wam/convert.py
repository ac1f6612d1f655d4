"""A `wam train` checkpoint as a lerobot `wam` policy: in memory (`from_wam`, which `WAMPolicy.from_pretrained`
uses for such a folder) or written as a lerobot pretrained_model/ folder (`convert`) that `lerobot-eval
--policy.path=` takes, and that wam reads back as the same weights and normaliser.

    lerobot-wam-convert runs/demo/train/last runs/demo/lerobot      # or python -m lerobot_policy_wam.convert

The policy's fields are the checkpoint's model, training and sampler configs; its features are the cameras the
model reads (their stored sizes), the dataset's state and the action. The weights are the checkpoint's EMA weights
(the ones wam evaluates and serves). The normaliser becomes statistics that lerobot's normalizer steps, with eps 0,
apply exactly as wam does, with the action guard's bounds beside them (wam/lerobot/normalize.py). train_config.json
names the checkpoint's dataset, so wam finds its tasks and seeds again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature

from lerobot_policy_wam.configuration_wam import TRAIN_FIELDS, WAMConfig
from lerobot_policy_wam.processor_wam import make_wam_pre_post_processors
from wam.lerobot.normalize import FROM_WAM, lerobot_stats
from wam.lerobot.wam_checkpoint import MODEL_FIELDS


def config_from_wam(run: dict, state_size: int, device: str | None = None) -> WAMConfig:
    """The policy config of a `wam train` run config (its config.json); `state_size`: the dataset's state entries
    (the normaliser's)."""
    m, data, train, sampler = run["model"], run["data"], run.get("train", {}), run.get("sampler", {})
    if m.get("backbone", "wam") != "wam":
        raise ValueError(f"the checkpoint is built on the {m['backbone']!r} backbone; the lerobot plugin trains and "
                         f"loads wam's own backbone only (a pretrained one needs its diffusers folder)")
    read = data.get("config") or {}
    state_key, action_key = read.get("state_key", "observation.state"), read.get("action_key", "action")
    if action_key != "action" or (state_size and state_key != "observation.state"):
        raise ValueError(f"the checkpoint read the features {state_key!r} and {action_key!r}; a lerobot policy reads "
                         f"observation.state and outputs action")
    inputs = {key: PolicyFeature(type=FeatureType.VISUAL, shape=(3, *shape))
              for key, shape in zip(data["camera_keys"], data["camera_shapes"])}
    if state_size:
        inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_size,))
    norm = {"VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode(FROM_WAM[read.get("state_norm", "mean_std")]),
            "ACTION": NormalizationMode(FROM_WAM[read.get("action_norm", "min_max")])}
    return WAMConfig(
        **{k: tuple(m[k]) if isinstance(m[k], list) else m[k] for k in MODEL_FIELDS if k in m},
        **{k: train[k] for k in TRAIN_FIELDS if k in train},
        resize=read.get("resize", "pad"), num_steps=sampler.get("steps"), video_steps=sampler.get("video_steps"),
        n_action_steps=sampler.get("execute"), normalization_mapping=norm, input_features=inputs,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(m["action_dim"],))},
        device=device or sampler.get("device", "cpu"))


def from_wam(path: str | Path, device: str | None = None):
    """(WAMPolicy in eval mode, preprocessor, postprocessor) of a `wam train` checkpoint folder."""
    from lerobot_policy_wam.modeling_wam import WAMPolicy, restoring
    from wam.checkpoint import load_model

    model, normalizer, run = load_model(Path(path))
    config = config_from_wam(run, len(normalizer.state_center), device)
    with restoring():
        policy = WAMPolicy(config)
    policy.model.load_state_dict(model.state_dict())
    policy.to(config.device).eval()
    stats = lerobot_stats(normalizer, "observation.state" if len(normalizer.state_center) else None,
                          config.normalization_mapping["STATE"].value, "action",
                          config.normalization_mapping["ACTION"].value)
    pre, post = make_wam_pre_post_processors(config, dataset_stats=stats, eps=0.0)
    return policy, pre, post


def convert(src: str | Path, out: str | Path) -> Path:
    """Write the lerobot pretrained_model/ folder of the `wam train` checkpoint `src` to `out`."""
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainPipelineConfig

    from wam.checkpoint import read_config

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder for the lerobot checkpoint")
    run = read_config(Path(src))
    if "type" in run:
        raise ValueError(f"{src} is a lerobot checkpoint already")
    policy, pre, post = from_wam(src)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    root = Path(run["data"]["root"])
    train = run.get("train", {})
    TrainPipelineConfig(dataset=DatasetConfig(repo_id=f"local/{root.name}", root=str(root)), policy=policy.config,
                        output_dir=out, steps=int(run.get("step") or train.get("steps") or 1),
                        batch_size=int(train.get("batch_size", 8)), seed=train.get("seed", 0))._save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lerobot-wam-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a `wam train` checkpoint folder (e.g. runs/train/last)")
    parser.add_argument("out", type=Path, help="the lerobot pretrained_model/ folder to write")
    args = parser.parse_args(argv)
    try:
        out = convert(args.checkpoint, args.out)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"wrote {out}: lerobot-eval --policy.path={out} ...; wam eval {out} reads it too")


if __name__ == "__main__":
    main()
