"""lerobot_policy_wam: wam's World-Action Models as a lerobot policy plugin (`--policy.type=wam`).

lerobot imports every installed distribution named lerobot_policy_*; importing this one registers the policy
config (`wam`), its LR schedule (`wam_cosine`) and the resize step of its preprocessor (`wam_resize_processor`),
so that lerobot-train, lerobot-eval and the processors saved with a checkpoint find them.
"""

from lerobot_policy_wam.configuration_wam import WAMConfig, WAMCosineSchedulerConfig
from lerobot_policy_wam.processor_wam import WAMResizeProcessorStep, make_wam_pre_post_processors

__all__ = ["WAMConfig", "WAMCosineSchedulerConfig", "WAMResizeProcessorStep", "make_wam_pre_post_processors"]
