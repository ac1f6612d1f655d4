"""The pre- and post-processors of a `wam` policy, as lerobot builds and saves them
(`make_wam_pre_post_processors`, found by lerobot's factory for `--policy.type=wam`).

    preprocessor   rename -> add a batch dimension -> fit every camera to the model's input (WAMResizeProcessorStep)
                   -> device -> normalise state and actions (lerobot's NormalizerProcessorStep)
    postprocessor  unnormalise the actions -> to the CPU

The resize is wam's own (wam.data.resize.fit: pad or crop, linear with antialiasing), on the uint8 values of
lerobot's float frames, so a frame reaches the model exactly as `wam train`'s frame cache, `wam eval` and `wam
serve` fit it, whatever the camera's size: a dataset's non-square cameras, lerobot's 480 x 480 Meta-World frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lerobot.configs.types import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    ObservationProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import OBS_IMAGE, POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from lerobot_policy_wam.configuration_wam import WAMConfig
from wam.data.resize import fit


def is_camera(key: str) -> bool:
    """observation.image, observation.images.<name>; not their `_is_pad` masks."""
    return key.startswith(OBS_IMAGE) and not key.endswith("_is_pad")


def fit_frames(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Frames (..., 3, h, w), float in [0, 1] (or uint8), fitted to (..., 3, size, size) by wam.data.resize.fit on
    their uint8 values; float in [0, 1] again, on x's device. Frames already of the size come back unchanged."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    u8 = x if x.dtype == torch.uint8 else (x.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    out = torch.from_numpy(fit(u8.cpu().movedim(-3, -1).numpy(), size, mode)).movedim(-1, -3)
    return out.to(x.device) if x.dtype == torch.uint8 else (out.to(x.device, x.dtype) / 255)


@ProcessorStepRegistry.register(name="wam_resize_processor")
@dataclass
class WAMResizeProcessorStep(ObservationProcessorStep):
    """Fits every camera's frames to the model's square input, as wam fits them (module docstring)."""

    size: int = 96
    mode: str = "pad"

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        for key, x in observation.items():
            if is_camera(key) and isinstance(x, torch.Tensor):
                if x.ndim < 3 or x.shape[-3] != 3:
                    raise ValueError(f"{key}: expected frames (..., 3, H, W), got shape {tuple(x.shape)}")
                out[key] = fit_frames(x, self.size, self.mode)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"size": self.size, "mode": self.mode}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        obs = features.get(PipelineFeatureType.OBSERVATION, {})
        for key, ft in list(obs.items()):
            if is_camera(key):
                obs[key] = PolicyFeature(type=ft.type, shape=(ft.shape[0], self.size, self.size))
        return features


def make_wam_pre_post_processors(
    config: WAMConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
    eps: float = 1e-8,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """The pipelines around a `wam` policy (module docstring). `eps`: the normalizer's; a checkpoint converted
    from `wam train` uses 0, so that lerobot's normalisation is exactly wam's (wam/lerobot/normalize.py)."""
    features = {**config.input_features, **config.output_features}
    input_steps = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        WAMResizeProcessorStep(size=config.image_size, mode=config.resize),
        DeviceProcessorStep(device=config.device),
        NormalizerProcessorStep(features=features, norm_map=config.normalization_mapping, stats=dataset_stats,
                                device=config.device, eps=eps),
    ]
    output_steps = [
        UnnormalizerProcessorStep(features=config.output_features, norm_map=config.normalization_mapping,
                                  stats=dataset_stats, eps=eps),
        DeviceProcessorStep(device="cpu"),
    ]
    return (
        PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=input_steps, name=POLICY_PREPROCESSOR_DEFAULT_NAME),
        PolicyProcessorPipeline[PolicyAction, PolicyAction](
            steps=output_steps, name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
            to_transition=policy_action_to_transition, to_output=transition_to_policy_action),
    )
