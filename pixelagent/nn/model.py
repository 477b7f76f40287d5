"""The four parts as one trainable model: paper eq. 8, save_pretrained / from_pretrained.

Used by the training recipes and by :class:`pixelagent.Agent` to load trained weights. The
parts keep their own trainable/frozen split (``requires_grad``); this module only composes them.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pixelagent.errors import CheckpointError, ConfigError, PartError, WeightsNotFoundError, single_line
from pixelagent.files import check_regular_file, read_text
from pixelagent.nn.card import CARD_FILE, model_card
from pixelagent.nn.device import seeded_rng
from pixelagent.nn.losses import LossWeights, mask_losses, phrase_loss, scale_grad
from pixelagent.nn.tokens import focus_spans
from pixelagent.parts import PART_KINDS, Part
from pixelagent.presets import Preset, parse_preset

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
FORMAT = "pixelagent-segmentation-model"
FORMAT_VERSION = 1
#: State-dict prefixes of training-only modules, left out of saved models.
TRAINING_ONLY = ("phrase_head.",)
#: errno values that mean "the disk (or the quota, or the file-size limit) is full".
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: A saved model that cannot be read: how to get a good one.
_RESAVE = "re-save the model with save_pretrained (or re-download it), or point at the right folder"


@dataclass
class SegSample:
    """One training sample.

    Attributes:
        image: RGB uint8 (H, W, 3).
        turns: ``(question, answer)`` pairs; answers carry ``[OBJ]phrase[SEG]`` markup.
        masks: bool (n, H, W), one per ``[SEG]`` of the answers, in order (n may be 0).
    """

    image: np.ndarray
    turns: list[tuple[str, str]]
    masks: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), dtype=bool))


@dataclass
class ModelOutput:
    """Losses of one batch (scalars) and the mask logits, a list of (n_i, H_i, W_i)."""

    loss: torch.Tensor
    text_loss: torch.Tensor
    bce_loss: torch.Tensor
    dice_loss: torch.Tensor
    mask_logits: list[torch.Tensor]
    phrase_loss: torch.Tensor | None = None  # only with the auxiliary phrase loss on


class SegmentationModel(nn.Module):
    """visual encoder + LLM + alignment + mask decoder, trained end to end with eq. 8."""

    def __init__(self, parts: dict[str, Part], preset: Preset, weights: LossWeights = LossWeights()) -> None:
        super().__init__()
        for kind in PART_KINDS:
            if not isinstance(parts[kind], nn.Module):
                raise ConfigError(f"{kind} {preset.choice(kind).name!r} is not a torch module, so "
                                  "the preset cannot be trained; pick neural parts")
        self.visual_encoder, self.llm = parts["visual_encoder"], parts["llm"]
        self.alignment, self.mask_decoder = parts["alignment"], parts["mask_decoder"]
        self.preset = preset
        self.weights = weights
        self.feature_cache = None  # a FeatureCache: frozen encoder outputs reused across epochs
        self.phrase_noise = None  # a PhraseNoise applied to training dialogues (train mode only)
        # Training-only (loss.phrase > 0): prompt → logits over the LLM's vocabulary; never saved.
        self.phrase_head = self._phrase_head() if weights.phrase > 0 else None

    def span_tokens(self, option: str) -> tuple[Any, int, int | None]:
        """The LLM's tokenizer and the ``[SEG]`` / ``[OBJ]`` ids, which ``option`` (a config key) needs."""
        tokenizer = getattr(self.llm, "tokenizer", None)
        if tokenizer is None or not hasattr(self.alignment, "seg_id"):
            raise ConfigError(f"{option} needs an LLM with a tokenizer and a [SEG]-token alignment; "
                              f"set {option}: 0 for this preset")
        return tokenizer, self.alignment.seg_id, getattr(self.alignment, "obj_id", None)

    def _phrase_head(self) -> nn.Linear:
        tokenizer, _, _ = self.span_tokens("loss.phrase")
        with seeded_rng(0):  # the caller's RNG untouched
            head = nn.Linear(getattr(self.mask_decoder, "prompt_dim", 256), len(tokenizer))
        return head.to(next(self.alignment.parameters()).device)

    def use_feature_cache(self, directory: str | os.PathLike) -> None:
        """Keep frozen encoder outputs under ``directory`` (parts without the split are unaffected)."""
        from pixelagent.nn.feature_cache import FeatureCache

        frozen = {kind: self.preset.choice(kind).model_dump() for kind in ("visual_encoder", "mask_decoder")}
        self.feature_cache = FeatureCache(directory, FeatureCache.namespace_for(frozen))

    @property
    def parts(self) -> dict[str, Part]:
        return {kind: getattr(self, kind) for kind in PART_KINDS}

    def forward(self, samples: list[SegSample]) -> ModelOutput:
        images = [s.image for s in samples]
        visual = self._encode(images)
        encoded = [self.llm.encode_dialogue(s.turns) for s in samples]
        if self.training and self.phrase_noise is not None:
            encoded = [self.phrase_noise(ids, labels) for ids, labels in encoded]
        text = self.llm.forward_train([e[0] for e in encoded], [e[1] for e in encoded], visual)
        prompts = self.alignment.embed_batch(scale_grad(text.hidden, self.weights.llm_mask_grad), text.ids)
        _check_counts(prompts, samples)
        logits = self.mask_decoder.predict_logits(self._embed(images), prompts)
        targets = [torch.from_numpy(np.array(s.masks, dtype=bool)).to(l.device) for s, l in zip(samples, logits)]
        bce, dice = mask_losses(logits, targets)
        w = self.weights
        loss = w.text * text.loss + w.bce * bce.to(text.loss.device) + w.dice * dice.to(text.loss.device)
        phrase = None
        if self.phrase_head is not None:
            phrase = self._phrase_loss(prompts, text.ids)
            loss = loss + w.phrase * phrase
        return ModelOutput(loss, text.loss, bce, dice, logits, phrase)

    def _phrase_loss(self, prompts: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Mean over the batch's ``[SEG]`` prompts of :func:`phrase_loss` against their phrase's words.

        The words are those the LLM read (``ids``), a ``phrase_noise`` swap included: the prompt is
        to carry the phrase as given, as it will carry the model's own words at inference, and
        the mask target teaches the decoder how far to trust each of them.
        """
        rows, targets = [], []
        _, seg_id, obj_id = self.span_tokens("loss.phrase")
        for sequence_ids, sequence_prompts in zip(ids, prompts):
            for prompt, (start, seg) in zip(sequence_prompts, focus_spans(sequence_ids, seg_id, obj_id)):
                words = sequence_ids[start + 1:seg]
                if words.numel() == 0:  # a bare [SEG]: no phrase to reconstruct
                    continue
                target = torch.zeros(self.phrase_head.out_features, device=prompt.device)
                target[words] = 1.0
                rows.append(prompt)
                targets.append(target)
        if not rows:  # still connected, so DDP sees a gradient for the head
            return self.phrase_head.weight.sum() * 0.0
        logits = self.phrase_head(torch.stack(rows).float())
        return phrase_loss(logits, torch.stack(targets)) / len(rows)

    def _encode(self, images: list[np.ndarray]) -> torch.Tensor:
        encoder = self.visual_encoder
        if not _cacheable(self.feature_cache, encoder):
            return encoder.encode_batch(images)
        return encoder.from_frozen(self.feature_cache.fetch("visual_encoder", images, encoder.frozen_features))

    def _embed(self, images: list[np.ndarray]) -> Any:
        decoder = self.mask_decoder
        if not _cacheable(self.feature_cache, decoder):
            return decoder.embed_batch(images)
        return decoder.from_frozen(self.feature_cache.fetch("mask_decoder", images, decoder.frozen_features), images)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, include_frozen: bool = True,
                        state: dict[str, torch.Tensor] | None = None, card: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (the preset), ``model.safetensors``, the LoRA ``adapter/`` and a
        model card (``README.md`` with Hugging Face metadata; ``card`` gives its ``datasets``,
        ``metrics``, ``license`` or ``description``; an existing README.md is kept).

        ``include_frozen=False`` saves only what trains (a 7B model's frozen LLM, CLIP and SAM
        encoder then come from their own checkpoints, named in the preset, when loading).
        ``state`` is the full state dict when the caller gathered it (a model sharded by FSDP,
        whose own ``state_dict()`` holds shards); by default it is ``self.state_dict()``.

        Each file is written under a temporary name and renamed, and ``config.json`` (what marks
        a folder as a saved model) comes last, so a save cut short (a full disk, a kill) never
        leaves a folder that looks loadable. A failed write raises :class:`CheckpointError`.
        """
        directory = Path(directory)
        config = {"format": FORMAT, "version": FORMAT_VERSION, "complete": include_frozen,
                  "preset": self.preset.model_dump(mode="json")}
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        gathered = state
        full = self.state_dict() if gathered is None else gathered
        state = {k: v.detach().contiguous().cpu() for k, v in full.items()
                 if (include_frozen or k in trainable) and not k.startswith(TRAINING_ONLY)}
        target = directory / WEIGHTS_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_atomically(target, lambda tmp: save_safetensors(state, tmp))
            if hasattr(self.llm, "save_adapter"):
                target = directory / ADAPTER_DIR
                self.llm.save_adapter(str(target), state=None if gathered is None else
                                      {k[len("llm."):]: v for k, v in gathered.items() if k.startswith("llm.")})
            target = directory / CARD_FILE
            if card is not None or not target.exists():
                text = model_card(self.preset, **(card or {}))
                write_atomically(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            target = directory / CONFIG_FILE
            write_atomically(target, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise CheckpointError(f"disk full: cannot save the model to {directory} ({exc.strerror} while "
                                      f"writing {target.name}); free space or save to another folder") from None
            raise CheckpointError(f"cannot save the model to {directory}: {exc.strerror or exc} (writing "
                                  f"{target.name}); check the folder is writable or save elsewhere") from None
        return directory

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    include_frozen: bool = True, card: dict[str, Any] | None = None,
                    commit_message: str = "Upload a pixelagent model") -> str:
        """Save into a temporary folder and upload it to the Hugging Face Hub as ``repo_id``
        (created if needed); returns the repository URL. ``Agent(repo_id)`` loads it back."""
        import tempfile

        from pixelagent.hub import offline

        try:
            from huggingface_hub import HfApi
        except ImportError:
            from pixelagent.errors import MissingDependencyError

            raise MissingDependencyError("push_to_hub needs huggingface_hub: pip install huggingface_hub") from None
        if offline():
            raise ConfigError(f"cannot push {repo_id} while HF_HUB_OFFLINE=1 is set; unset it, or save_pretrained "
                              "to a folder and upload that later with `hf upload`")
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, include_frozen=include_frozen, card=card)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
        return str(url)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> SegmentationModel:
        """Rebuild the parts from the saved preset (with ``overrides``, e.g. device) and load the weights."""
        from pixelagent.registry import get_registry

        preset = read_preset(directory)
        if overrides:
            preset = preset.with_overrides(**overrides)
        model = cls(get_registry().build(preset), preset)
        model.load_weights(directory)
        return model

    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load ``model.safetensors`` from ``directory`` into the parts (strict)."""
        path = Path(directory) / WEIGHTS_FILE
        if not os.path.lexists(path):
            raise WeightsNotFoundError(f"no {WEIGHTS_FILE} in {directory}; point at a directory written by "
                                       "SegmentationModel.save_pretrained (a run's final/), or re-save the model")
        state = self._converted(read_safetensors(path, "model weights"))
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of the wrong shape: torch's message spans lines
            raise ConfigError(f"weights in {path} do not fit preset {self.preset.name!r}: "
                              f"{single_line(str(exc))}; point at a model saved with this preset") from None
        missing = [k for k in missing if not k.startswith(TRAINING_ONLY)]  # never saved
        if not _is_complete(directory):  # trainable-only save: the rest came from the base checkpoints
            missing = [k for k in missing if k in {n for n, p in self.named_parameters() if p.requires_grad}]
        if missing or unexpected:
            raise ConfigError(f"weights in {path} do not fit preset {self.preset.name!r}: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")

    def _converted(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with each part's slice passed through its ``convert_state_dict`` (a part
        built for inference may hold the weights in another form, e.g. LoRA folded in)."""
        for kind, part in self.parts.items():
            convert = getattr(part, "convert_state_dict", None)
            if convert is None:
                continue
            prefix = f"{kind}."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            state.update({prefix + k: v for k, v in convert(own).items()})
        return state

    def merge_lora(self) -> None:
        """Fold LoRA into the LLM weights; the saved preset then builds without adapters."""
        self.llm.merge_lora()
        settings = self.preset.llm.settings
        lora = {**settings.get("lora", {}), "r": 0}
        self.preset = self.preset.with_overrides(llm={"settings": {"lora": lora}})


def _cacheable(cache: Any, part: Any) -> bool:
    """A cache is in use and the part has a frozen split that is frozen right now."""
    return cache is not None and hasattr(part, "frozen_features") and getattr(part, "cacheable", True)


def read_preset(directory: str | os.PathLike) -> Preset:
    """The preset stored in a saved model directory, with ``weights`` pointing at it."""
    path = Path(directory) / CONFIG_FILE
    if not os.path.lexists(path):
        raise WeightsNotFoundError(f"no {CONFIG_FILE} in {directory}; point at a directory written by "
                                   "save_pretrained (it holds config.json and model.safetensors), or re-save "
                                   "the model (a save cut short writes no config.json)")
    text = read_text(path, "model config", error=CheckpointError)  # a FIFO, a directory, not UTF-8
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"model config {path} is not valid JSON ({single_line(str(exc))}; truncated or "
                              f"corrupted?); {_RESAVE}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"model config {path} is not a JSON object; {_RESAVE}")
    if config.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a pixelagent model (format {config.get('format')!r})")
    if not isinstance(config.get("version", 0), int):
        raise CheckpointError(f"model config {path} has a bad format version {config['version']!r}; {_RESAVE}")
    if config.get("version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{path} was written by a newer pixelagent (format version "
                          f"{config['version']}); upgrade pixelagent to load it")
    if not isinstance(config.get("preset"), dict):
        raise CheckpointError(f"model config {path} has no preset; {_RESAVE}")
    return parse_preset({**config["preset"], "weights": str(directory)}, source=str(path))


def is_complete_save(directory: str | os.PathLike) -> bool:
    """Whether a saved model holds every weight (``save_pretrained(include_frozen=True)``)."""
    return _is_complete(directory)


def _is_complete(directory: str | os.PathLike) -> bool:
    try:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return True
    return config.get("complete", True) if isinstance(config, dict) else True


# -- safe reading and writing of weight files (shared with the training checkpoints) ----------------
def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``safetensors.torch.save_file`` whose I/O failures are OSErrors with their errno.

    safetensors raises its own SafetensorError, the OS error only as text ("I/O error: No
    space left on device (os error 28)"); Rust's std formats every OS error that way, so the
    errno is read back from it and a full disk can be told from other failures.
    """
    try:
        save_file(tensors, os.fspath(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), os.fspath(path)) from None


def read_safetensors(path: str | os.PathLike, what: str = "weights file",
                     fix: str = _RESAVE) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or a one-line :class:`CheckpointError` naming it and ``fix``."""
    check_regular_file(path, what, error=CheckpointError)
    try:
        return load_file(os.fspath(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{what} {os.fspath(path)} is not a readable safetensors file "
                              f"({single_line(str(exc))}; truncated or corrupted?); {fix}") from None


def write_atomically(path: Path, write) -> None:
    """``write(tmp)`` into a temporary sibling of ``path``, then rename it into place.

    Readers see the old file or the whole new one; a failed write leaves no partial file.
    """
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_weights_into(parts: dict[str, Part], preset: Preset) -> None:
    """Load ``preset.weights`` into freshly built parts (the Agent's path to trained models)."""
    SegmentationModel(parts, preset).load_weights(preset.weights)


def _check_counts(prompts: list[torch.Tensor], samples: list[SegSample]) -> None:
    for index, (p, s) in enumerate(zip(prompts, samples)):
        if p.shape[0] != s.masks.shape[0]:
            raise PartError(f"sample {index} has {p.shape[0]} [SEG] tokens in its answers but "
                            f"{s.masks.shape[0]} masks; give one mask per [SEG], in order")
