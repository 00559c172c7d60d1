"""Activation steering along the first principal component of the contrast differences (RepE-style; Zou et al. 2023,
"Representation Engineering"), sign-corrected so that the positive completions lie on its positive side.

Everything but the direction is CAA's (`methods/steering.py`): the same contrast pairs bought from the labeler, the same
label-free screen and judged selection of layer, read position and multiplier, the same hooks and reliability rows.
The component is scaled by the mean projection of the differences on it, so multipliers mean what they mean for CAA.

    intervention = SteeringPCA(SteeringPCAConfig()).fit(ctx)
    intervention.chosen["direction"]      # "pca"
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.steering import Steering, SteeringConfig


@dataclass(frozen=True)
class SteeringPCAConfig(SteeringConfig):
    """The same knobs as SteeringConfig (a separate class, so the two methods' configs can diverge)."""


class SteeringPCA(Steering):
    name = "steering_pca"
    Config = SteeringPCAConfig
    direction = "pca"
