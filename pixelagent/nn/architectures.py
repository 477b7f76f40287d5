"""The architectures of the public checkpoints the full presets read, as plain config data.

With ``random_init: true`` a part builds its checkpoint's architecture with random weights from
these configs instead of downloading it: for GPU benchmarks, memory plans (``plan-memory``
builds on the meta device) and tests of the full-size code path. The masks and answers of such
a model are meaningless. A local checkpoint directory is read for its ``config.json`` instead,
so any other checkpoint works too when its config is at hand.

The values are those of the published ``config.json`` files (hub ids as keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixelagent.errors import ConfigError

#: CLIP ViT-L/14 at 336 px (LLaVA-1.5/1.6, LISA and MIRAS's low-resolution branch): 24×24 = 576 tokens of 1024-d.
CLIP_VISION: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    # the 224-px tower every LISA v1 release names (mm_vision_tower): 16×16 = 256 tokens of 1024-d
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
}

#: ConvNeXt-L (MIRAS's high-resolution branch): stage widths 192/384/768/1536, depths 3/3/27/3.
CONVNEXT: dict[str, dict[str, Any]] = {
    "facebook/convnext-large-224-22k-1k": dict(
        hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3], num_channels=3, patch_size=4,
        drop_path_rate=0.0, layer_norm_eps=1e-12, image_size=224),
}

_VICUNA_7B_TEXT = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, vocab_size=32064, pad_token_id=0, tie_word_embeddings=False)
_VICUNA_13B_TEXT = {**_VICUNA_7B_TEXT, "hidden_size": 5120, "intermediate_size": 13824,
                    "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40}

#: LLaVA-v1.6 (HF LLaVA-NeXT layout): a vicuna LLaMA, CLIP-L/14-336 and a 2-layer GELU projector.
LLAVA_NEXT: dict[str, dict[str, Any]] = {
    "llava-hf/llava-v1.6-vicuna-7b-hf": dict(
        text_config=_VICUNA_7B_TEXT, vision_config=dict(model_type="clip_vision_model",
                                                        **CLIP_VISION["openai/clip-vit-large-patch14-336"]),
        image_token_index=32000, projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default", tie_word_embeddings=False,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]),
    "llava-hf/llava-v1.6-vicuna-13b-hf": dict(
        text_config=_VICUNA_13B_TEXT, vision_config=dict(model_type="clip_vision_model",
                                                         **CLIP_VISION["openai/clip-vit-large-patch14-336"]),
        image_token_index=32000, projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default", tie_word_embeddings=False,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]),
}


def architecture(table: dict[str, dict[str, Any]], source: str | None, setting: str) -> dict[str, Any]:
    """The config kwargs of ``source``: a local checkpoint directory's ``config.json``, else the
    built-in entry of ``table``; ConfigError naming ``setting`` and the known ids otherwise."""
    if source and Path(source, "config.json").is_file():
        from pixelagent.files import read_text

        config = json.loads(read_text(Path(source, "config.json"), "checkpoint config"))
        return {k: v for k, v in config.items() if not k.startswith("_") and k not in {"architectures", "transformers_version"}}
    if source in table:
        return json.loads(json.dumps(table[source]))  # a deep copy: callers may edit it
    known = ", ".join(sorted(table))
    raise ConfigError(f"random_init needs the architecture of {source!r} ({setting}): pass a local checkpoint "
                      f"directory with its config.json, or one of the built-in ids: {known}")
