"""The model card a saved model carries: a Hugging Face ``README.md`` with its metadata header.

The header is the Hub's model-card metadata (``library_name``, ``pipeline_tag``, ``tags``,
``base_model``, ``datasets``, ``metrics``, ``license``), so a folder pushed with
``push_to_hub`` is listed and filtered like any other model; the body says what the model is
and how to load it. Values come from the preset (the checkpoints its parts start from) and from
what the caller knows (the training data, evaluation figures).
"""

from __future__ import annotations

from typing import Any

from pixelagent.presets import Preset

CARD_FILE = "README.md"

#: Settings that name the public checkpoint a part starts from.
_BASE_SETTINGS = {"llm": ("pretrained",), "visual_encoder": ("pretrained", "clip", "convnext"),
                  "mask_decoder": ("checkpoint",)}
_SAM_HUB = {"sam_vit_h_4b8939.pth": "facebook/sam-vit-huge", "sam_vit_l_0b3195.pth": "facebook/sam-vit-large",
            "sam_vit_b_01ec64.pth": "facebook/sam-vit-base"}


def base_models(preset: Preset) -> list[str]:
    """Hub ids of the public checkpoints the preset's parts start from (none for tiny parts)."""
    found: list[str] = []
    for kind, keys in _BASE_SETTINGS.items():
        settings = _settings_with_defaults(preset, kind)
        if settings.get("tiny") or settings.get("random_init"):
            continue
        for key in keys:
            value = settings.get(key)
            if not isinstance(value, str):
                continue
            value = _SAM_HUB.get(value.rsplit("/", 1)[-1], value)
            if "/" in value and not value.startswith(("/", ".", "~")) and value not in found:
                found.append(value)
    return found


def _settings_with_defaults(preset: Preset, kind: str) -> dict[str, Any]:
    """The part's settings as its builder sees them (defaults filled in), when it is registered."""
    choice = preset.choice(kind)
    try:
        from pixelagent.registry import get_registry

        validated = get_registry().part(kind, choice.name).validate_settings(choice.settings)
    except Exception:  # an unregistered part: the preset's own settings are all we know
        return dict(choice.settings)
    return validated.model_dump() if hasattr(validated, "model_dump") else dict(validated)


def model_card(preset: Preset, *, datasets: list[str] | None = None, metrics: dict[str, float] | None = None,
               license: str = "apache-2.0", description: str | None = None) -> str:
    """The text of ``README.md`` for a saved model of ``preset``.

    The metadata header is written by ``huggingface_hub``'s ``ModelCardData``, so it is the
    Hub's own format; ``metrics`` become ``model-index`` results on the first of ``datasets``
    (the Hub requires a dataset for each result; "unspecified" when none is given).
    """
    from huggingface_hub import EvalResult, ModelCardData

    dataset = (datasets or ["unspecified"])[0]
    results = [EvalResult(task_type="image-segmentation", task_name="reasoning segmentation",
                          dataset_type=dataset, dataset_name=dataset, metric_type=name,
                          metric_value=round(float(value), 4))
               for name, value in sorted((metrics or {}).items())]
    header = ModelCardData(
        library_name="pixelagent", pipeline_tag="image-segmentation", license=license,
        tags=["pixelagent", "reasoning-segmentation", "multi-turn", "referring-segmentation", preset.name],
        base_model=base_models(preset) or None, datasets=list(datasets) if datasets else None,
        metrics=sorted(metrics) if metrics else None, model_name=preset.name, eval_results=results or None)
    parts = "\n".join(f"- {kind.replace('_', ' ')}: `{preset.choice(kind).name}`"
                      for kind in ("visual_encoder", "llm", "alignment", "mask_decoder"))
    figures = "" if not metrics else "\n## Evaluation\n\n" + "\n".join(
        f"- {name}: {value:.4f}" for name, value in sorted(metrics.items())) + "\n"
    return f"""---
{header.to_yaml()}
---

# {preset.name}

{description or preset.description or "A pixel-level reasoning segmentation model saved by pixelagent."}

Parts (preset `{preset.name}`):

{parts}

## Use

```python
from pixelagent import Agent

agent = Agent("path/or/hub-id")        # this folder, or its Hub id
session = agent.session("photo.jpg")
reply = session.ask("What is on the label? Segment it.")
reply.text, reply.mask
```
{figures}"""
