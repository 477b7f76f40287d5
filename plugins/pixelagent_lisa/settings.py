"""Settings of the LISA plugin's parts (light: pydantic only, loaded by ``pixelagent --help``)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict


class ProjectionSettings(BaseModel):
    """The ``lisa-projection`` alignment.

    Attributes:
        seed: initialisation seed of the projection.
        release: a LISA release (folder or hub id) whose ``text_hidden_fcs`` to load.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    release: Optional[str] = None


class ReleaseSamSettings(BaseModel):
    """The ``lisa-sam`` mask decoder: SAM as folded into a LISA release (``model.visual_model.*``).

    Attributes:
        release: the LISA release (folder or hub id) to read SAM from.
        size: the SAM size; default: the one the release's image encoder has (ViT-H).
        random_init: no release, random weights (a converted model, whose weights come from its
            own save; benchmarks).
        train_image_encoder: train the image encoder too (frozen by default, as in LISA).
        seed: seed of the random weights.
    """

    model_config = ConfigDict(extra="forbid")

    release: Optional[str] = None
    size: Optional[Literal["vit_h", "vit_l", "vit_b", "tiny"]] = None
    random_init: bool = False
    train_image_encoder: bool = False
    seed: int = 0
