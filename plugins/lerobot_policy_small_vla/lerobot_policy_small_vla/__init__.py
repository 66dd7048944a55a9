"""Registers CRaFT's `small_vla` with LeRobot when its tools discover installed `lerobot_policy_*` plugins."""
from craft.policies.small_vla.configuration import SmallVLAConfig  # the `small_vla` policy type
from craft.policies.small_vla.modeling import SmallVLAPolicy  # found by LeRobot's factory
from craft.policies.small_vla.processor import (
    make_small_vla_pre_post_processors,  # the processor steps checkpoints name
)

__all__ = ["SmallVLAConfig", "SmallVLAPolicy", "make_small_vla_pre_post_processors"]
