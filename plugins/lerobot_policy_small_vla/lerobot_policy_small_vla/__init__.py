"""Registers CRaFT's `small_vla` with LeRobot when its tools discover installed `lerobot_policy_*` plugins."""
from craft.policies.small_vla.configuration_small_vla import SmallVLAConfig  # the `small_vla` policy type
from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy  # found by LeRobot's factory
from craft.policies.small_vla.processor_small_vla import (
    make_small_vla_pre_post_processors,  # the processor steps checkpoints name
)

__all__ = ["SmallVLAConfig", "SmallVLAPolicy", "make_small_vla_pre_post_processors"]
