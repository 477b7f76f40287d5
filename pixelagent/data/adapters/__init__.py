"""Training-data adapters: the formats users already have, as :class:`TrainingExample` datasets.

=============  ==========================================  ===================================
``type``       format                                      dataset class
=============  ==========================================  ===================================
semantic       ADE20K / COCO-Stuff / Mapillary label PNGs  :class:`SemanticSegDataset`
refer          refCOCO / + / g ``refs(*).p`` + instances   :class:`ReferDataset`
vqa            LLaVA-Instruct conversations JSON           :class:`VQADataset`
captions       COCO captions JSON                          :class:`CaptionsDataset`
prist          PRIST, canonical or published               :class:`PristDataset`
=============  ==========================================  ===================================

:func:`build_dataset` makes one from a config dict (``{"type": ..., **constructor arguments}``),
validated by a pydantic model per type that forbids unknown keys and checks every path, so a
config's problems are reported together in one ConfigError. Relative paths resolve against
``base_dir`` (the config file's directory, say) when it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo

from pixelagent.data.adapters.captions import CaptionsDataset
from pixelagent.data.adapters.prist import PristDataset
from pixelagent.data.adapters.refer import ReferDataset
from pixelagent.data.adapters.semantic import DEFAULT_IGNORED, SemanticSegDataset
from pixelagent.data.adapters.vqa import VQADataset
from pixelagent.data.examples import Dataset
from pixelagent.errors import ConfigError

__all__ = ["CaptionsDataset", "PristDataset", "ReferDataset", "SemanticSegDataset", "VQADataset",
           "build_dataset", "build_datasets"]


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return Path(base) / path if base is not None and not path.is_absolute() else path


def _checking(info: ValidationInfo) -> bool:
    return (info.context or {}).get("check_paths", True)


def _file(path: Path, info: ValidationInfo) -> Path:
    path = _resolve(path, info)
    if _checking(info) and not path.is_file():
        raise ValueError(f"{path} is not an existing file")
    return path


def _dir(path: Path, info: ValidationInfo) -> Path:
    path = _resolve(path, info)
    if _checking(info) and not path.is_dir():
        raise ValueError(f"{path} is not an existing directory")
    return path


File = Annotated[Path, AfterValidator(_file)]
Dir = Annotated[Path, AfterValidator(_dir)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None  # None: the dataset class's default name


class SemanticConfig(_Config):
    type: Literal["semantic"]
    images_dir: Dir
    labels_dir: Dir
    class_map: File
    ignore_index: int = 255
    ignore_classes: list[str] = list(DEFAULT_IGNORED)
    reduce_zero_label: bool = False
    max_classes: int = Field(3, ge=1)
    seed: int = 0


class ReferConfig(_Config):
    type: Literal["refer"]
    refs: File
    instances: File
    images_dir: Dir
    split: Literal["train", "val", "test", "testA", "testB"] = "train"
    max_sentences: int = Field(3, ge=1)
    seed: int = 0
    check_images: bool = False


class VQAConfig(_Config):
    type: Literal["vqa"]
    json_path: File
    images_dir: Optional[Dir] = None
    check_images: bool = False


class CaptionsConfig(_Config):
    type: Literal["captions"]
    json_path: File
    images_dir: Dir
    seed: int = 0
    check_images: bool = False


class PristConfig(_Config):
    type: Literal["prist"]
    dataset_dir: Optional[Dir] = None
    split: Optional[Literal["train", "val", "test"]] = None
    published_json: Optional[File] = None
    annotations_dir: Optional[Dir] = None
    images_dir: Optional[Dir] = None
    label_match: Literal["contains", "exact"] = "contains"
    allow_missing_masks: bool = False


AnyConfig = Annotated[Union[SemanticConfig, ReferConfig, VQAConfig, CaptionsConfig, PristConfig],
                      Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(AnyConfig)
_CLASSES = {"semantic": SemanticSegDataset, "refer": ReferDataset, "vqa": VQADataset,
            "captions": CaptionsDataset, "prist": PristDataset}


def validate_spec(spec: Any, base_dir: str | Path | None = None, where: str = "dataset config",
                  check_paths: bool = True) -> BaseModel:
    """The validated config model of ``spec``; ConfigError listing every problem found.

    ``check_paths=False`` checks the form only (a config shipped for data that lives elsewhere).
    """
    try:
        return _ADAPTER.validate_python(spec, context={"base_dir": base_dir, "check_paths": check_paths})
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc']) or '<config>'}: {e['msg']}"
                    for e in exc.errors()]
        raise ConfigError(f"{where}: {len(problems)} problem(s): " + "; ".join(problems)) from None


def build_dataset(spec: dict, base_dir: str | Path | None = None) -> Dataset:
    """A dataset from ``{"type": "semantic"|"refer"|"vqa"|"captions"|"prist", ...arguments}``."""
    config = validate_spec(spec, base_dir)
    arguments = config.model_dump(exclude={"type"}, exclude_none=True)
    return _CLASSES[config.type](**arguments)


def build_datasets(specs: dict[str, dict], base_dir: str | Path | None = None) -> dict[str, Dataset]:
    """Several named datasets (``{source name: spec}``, the name defaulting to the key) at once.

    Every spec is validated before any dataset is built, and all their problems are reported
    together in one ConfigError.
    """
    problems = []
    for key, spec in specs.items():
        try:
            validate_spec(spec, base_dir, where=f"dataset {key!r}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return {key: build_dataset({"name": key, **spec}, base_dir) for key, spec in specs.items()}
