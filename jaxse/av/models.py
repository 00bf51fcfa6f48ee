"""The audio-visual score model: an NCSN++ prior whose network also takes conditioning frames."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxse.diffusion.models import ScoreModel


@dataclasses.dataclass(frozen=True)
class AVScoreModel(ScoreModel):
    """:class:`jaxse.diffusion.models.ScoreModel` with ``net.cond_dim > 0``, recorded as the ``"av"`` family:
    ``score(variables, x, t, cond, cond_mask)``, ``cond`` the visual features ``(B, T_v, cond_dim)``."""

    family: ClassVar[str] = "av"

    def __post_init__(self):
        super().__post_init__()
        if self.net.cond_dim < 1:
            raise ValueError("an audio-visual score model needs net.cond_dim > 0 (the visual feature dimension)")

    @property
    def cond_dim(self) -> int:
        return self.net.cond_dim
