"""The forward-region context: max_i |η_i| over the event's real particles."""

from symfw.core import kinematics
from symfw.core.interfaces import BreakingContext


class MaxAbsEta(BreakingContext):
    """Largest |η| of the event's particles, (B, 1): resolution degrades towards the beam."""

    name = "max-abs-eta"

    def __call__(self, p4, mask):
        return (kinematics.eta(p4).abs() * mask.to(p4.dtype)).amax(1, keepdim=True)
