"""The ``sam`` mask decoder part: SAM's frozen image encoder + prompt encoder, trainable decoder.

Inference (one image, many prompts, no gradients)::

    embedding = part.embed_image(image)                  # SamImageEmbedding (1, 256, e, e)
    part.decode(embedding, [DecoderPrompt("x", embedding=v)], (H, W))  # [MaskPrediction]

Training (gradients through the mask decoder and into the prompt embeddings)::

    embeddings = part.embed_batch(images)                # (B, 256, e, e), no gradients
    logits = part.predict_logits(embeddings, [p_1, ..., p_B])  # p_i: (n_i, 256) → (n_i, H_i, W_i)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelagent.errors import InputError, PartError, WeightsNotFoundError
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent.parts import DecoderPrompt, MaskDecoder, MaskPrediction

from .checkpoint import missing_weights_message
from .modeling import build_sam_model
from .settings import SamSettings
from .transforms import (Size, box_to_input_frame, input_frame_scale, postprocess_logits, preprocess,
                         resized_shape)


@dataclass
class SamImageEmbedding:
    """SAM image embeddings of B images, with the sizes needed to map masks back.

    Attributes:
        embedding: (B, 256, e, e) in the module's dtype and device (e = 64; 16 for tiny).
        input_sizes: per image, the resized (h, w) inside the padded square input.
        original_sizes: per image, the original (H, W).
    """

    embedding: torch.Tensor
    input_sizes: list[Size]
    original_sizes: list[Size]

    @property
    def input_size(self) -> Size:
        """The resized (h, w) of a single-image embedding."""
        return self._single(self.input_sizes)

    @property
    def original_size(self) -> Size:
        """The original (H, W) of a single-image embedding."""
        return self._single(self.original_sizes)

    def _single(self, sizes: list[Size]) -> Size:
        if len(sizes) != 1:
            raise PartError(f"expected the SAM embedding of one image, got {len(sizes)} images")
        return sizes[0]


class PromptGate(nn.Module):
    """Text-to-pixel gate: a dense prompt from a sparse one (FiLM-style channel gating).

    ``dense = Conv1x1(embedding * Linear(prompt))``: each image-embedding cell is gated
    channel-wise by the prompt, so cells whose features match the prompt (the *red* bottle, not
    the blue one) stand out before SAM's two-way transformer runs. The 1x1 convolution starts at
    zero, so a new gate leaves SAM's output unchanged. Not part of SAM, LISA or MIRAS: the tiny
    presets use it (``prompt_gate: true``) because SAM-tiny's decoder, prompted by one sparse
    token, learns *where* a thing of the named kind is far more easily than *which* one.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(dim, dim)
        self.out = nn.Conv2d(dim, dim, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, embedding: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """embedding (1, C, e, e), prompts (n, C) → dense prompts (n, C, e, e)."""
        return self.out(embedding * self.scale(prompts)[:, :, None, None])


class SamMaskDecoder(MaskDecoder, nn.Module):
    """SAM as a pixelagent mask decoder; ``sam`` is a ``segment_anything.modeling.Sam``.

    State-dict keys are ``sam.image_encoder.*``, ``sam.prompt_encoder.*``, ``sam.mask_decoder.*``.
    The image and prompt encoders are frozen, the mask decoder trains (DESIGN §2). With
    ``train_image_encoder`` (tiny models trained from scratch) the image encoder trains too.
    With ``prompt_gate`` a :class:`PromptGate` (keys ``prompt_gate.*``, trained with the decoder)
    also turns every embedding prompt into a dense prompt; box and point prompts do not use it.

    Attributes:
        prompt_dim: channels of a prompt token / the image embedding (256).
        image_size: side of the square input (1024; 128 for tiny).
    """

    def __init__(self, sam: nn.Module, train_image_encoder: bool = False, prompt_gate: bool = False) -> None:
        super().__init__()
        self.sam = sam
        self.prompt_dim: int = sam.prompt_encoder.embed_dim
        self.image_size: int = sam.image_encoder.img_size
        self.train_image_encoder = train_image_encoder
        self.sam.image_encoder.requires_grad_(train_image_encoder)
        self.sam.prompt_encoder.requires_grad_(False)
        self.sam.mask_decoder.requires_grad_(True)
        self.prompt_gate = PromptGate(self.prompt_dim) if prompt_gate else None
        self._keep_positional_encoding_float32()

    @property
    def device(self) -> torch.device:
        return self.sam.mask_decoder.iou_token.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sam.mask_decoder.iou_token.weight.dtype

    def _apply(self, fn: Any, recurse: bool = True) -> SamMaskDecoder:
        # Every .to() / .half() / .bfloat16() ends here; undo the cast of the positional encoding.
        super()._apply(fn, recurse)
        self._keep_positional_encoding_float32()
        return self

    def _keep_positional_encoding_float32(self) -> None:
        # segment-anything multiplies float32 coordinates by this (2, 128) matrix, which fails
        # once it is bf16; float32 also keeps sin(2π·x·G) accurate. The outputs are cast to the
        # module dtype where they are used.
        pe = self.sam.prompt_encoder.pe_layer
        pe.positional_encoding_gaussian_matrix = pe.positional_encoding_gaussian_matrix.float()

    # -- image embeddings ---------------------------------------------------------------------
    @torch.no_grad()
    def embed_image(self, image: np.ndarray) -> SamImageEmbedding:
        """RGB uint8 (H, W, 3) → its embedding (1, 256, e, e) and sizes."""
        return self.embed_batch([image])

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`frozen_features` may be cached: only while the image encoder is frozen."""
        return not self.train_image_encoder

    def embed_batch(self, images: Sequence[np.ndarray]) -> SamImageEmbedding:
        """B RGB uint8 images (any sizes) → embeddings (B, 256, e, e); differentiable only when
        the image encoder trains (``train_image_encoder``) and gradients are enabled."""
        if len(images) == 0:
            raise InputError("embed_batch needs at least one image")
        with torch.set_grad_enabled(self.train_image_encoder and torch.is_grad_enabled()):
            return self._embed_batch(images)

    def _embed_batch(self, images: Sequence[np.ndarray]) -> SamImageEmbedding:
        embeddings, input_sizes = [], []
        for image in images:
            # One image at a time, as LISA does: the global-attention blocks of ViT-H hold a
            # (16, 4096, 4096) attention map per image, which a whole batch would multiply.
            pixels, input_size = preprocess(image, self.image_size, self.device)
            embeddings.append(self.sam.image_encoder(pixels.unsqueeze(0).to(self.dtype)))
            input_sizes.append(input_size)
        original_sizes = [(int(image.shape[0]), int(image.shape[1])) for image in images]
        return SamImageEmbedding(torch.cat(embeddings), input_sizes, original_sizes)

    def frozen_features(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Per image, its embedding (256, e, e) (the image encoder is frozen), for a feature cache."""
        return [{"embedding": e} for e in self.embed_batch(images).embedding]

    def from_frozen(self, features: list[dict[str, torch.Tensor]], images: Sequence[np.ndarray]) -> SamImageEmbedding:
        """:meth:`embed_batch` from cached features of ``images`` (sizes come from the images)."""
        originals = [(int(i.shape[0]), int(i.shape[1])) for i in images]
        embedding = torch.stack([f["embedding"] for f in features]).to(device=self.device, dtype=self.dtype)
        return SamImageEmbedding(embedding, [resized_shape(h, w, self.image_size) for h, w in originals], originals)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self, image_embedding: SamImageEmbedding, prompts: list[DecoderPrompt], image_size: tuple[int, int]
    ) -> list[MaskPrediction]:
        """One bool mask at the original (H, W) per prompt, scored by SAM's predicted IoU.

        A prompt's ``box`` (XYXY, original pixels) becomes SAM's two box-corner tokens and its
        ``embedding`` (256,) one more sparse token, as LISA does; a prompt may carry both.
        """
        original_size = image_embedding.original_size
        if tuple(image_size) != original_size:
            raise PartError(f"decode got image size {tuple(image_size)} for an embedding of a "
                            f"{original_size} image; embed this image first")
        return [self._decode_one(image_embedding, prompt) for prompt in prompts]

    @torch.no_grad()
    def decode_many(self, requests: Sequence[tuple[SamImageEmbedding, list[DecoderPrompt], tuple[int, int]]]
                    ) -> list[list[MaskPrediction]]:
        """:meth:`decode` for the turns of several sessions at once: the prompts of every request
        that carry the same kind of tokens go through SAM's mask decoder as one batch (each
        row with its own image's embedding). One request alone takes :meth:`decode`."""
        if len(requests) == 1:
            return [self.decode(*requests[0])]
        rows = []  # (request, prompt index, tokens (k, 256), gate, embedding (1, 256, e, e))
        for r, (embedding, prompts, size) in enumerate(requests):
            if tuple(size) != embedding.original_size:
                raise PartError(f"decode got image size {tuple(size)} for an embedding of a "
                                f"{embedding.original_size} image; embed this image first")
            for p, prompt in enumerate(prompts):
                tokens = self._prompt_tokens(prompt, embedding.original_size)
                gate = None if prompt.embedding is None else tokens[-1:]
                rows.append((r, p, tokens, gate, embedding))
        out: list[list[MaskPrediction | None]] = [[None] * len(prompts) for _, prompts, _ in requests]
        groups: dict[tuple[int, bool], list] = {}
        for row in rows:  # rows batch when their token counts and gating agree
            groups.setdefault((row[2].shape[0], row[3] is not None), []).append(row)
        for group in groups.values():
            embeddings = torch.cat([row[4].embedding for row in group])
            tokens = torch.stack([row[2] for row in group])
            gates = torch.cat([row[3] for row in group]) if group[0][3] is not None else None
            low_res, iou = self._run_decoder_rows(embeddings, tokens, gates)
            for index, (r, p, _, _, embedding) in enumerate(group):
                logits = postprocess_logits(low_res[index:index + 1], embedding.input_size,
                                            embedding.original_size, self.image_size)
                out[r][p] = MaskPrediction(mask=(logits[0] > 0.0).cpu().numpy(),
                                           score=float(iou.float().clamp(0.0, 1.0)[index, 0]))
        return out  # type: ignore[return-value]

    def _run_decoder_rows(self, embeddings: torch.Tensor, tokens: torch.Tensor, gate_prompts: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's single-mask decoding for n rows that each have their own image: embeddings
        (n, 256, e, e), sparse tokens (n, k, 256) → low-res logits (n, 1, 4e, 4e), IoU (n, 1).

        segment_anything's ``MaskDecoder.forward`` takes one image for all its prompts (it
        repeats the embedding per prompt); this is the same computation with the image per row:
        the output tokens (IoU token, mask tokens) before the prompt's, the two-way transformer
        over the image embedding plus the dense prompt, the upscaled embedding read by each mask
        token's hypernetwork MLP, and the IoU head on the IoU token.
        """
        decoder, encoder = self.sam.mask_decoder, self.sam.prompt_encoder
        n, e_h, e_w = embeddings.shape[0], *encoder.image_embedding_size
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, e_h, e_w)
        if self.prompt_gate is not None and gate_prompts is not None:
            dense = dense + torch.cat([self.prompt_gate(embeddings[i:i + 1], gate_prompts[i:i + 1])
                                       for i in range(n)])
        output = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight]).unsqueeze(0).expand(n, -1, -1)
        queries = torch.cat([output, tokens], dim=1)
        positions = encoder.get_dense_pe().to(self.dtype).expand(n, -1, -1, -1)
        states, image = decoder.transformer(embeddings + dense, positions, queries)
        channels = embeddings.shape[1]
        upscaled = decoder.output_upscaling(image.transpose(1, 2).reshape(n, channels, e_h, e_w))
        readers = torch.stack([mlp(states[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
        _, c, h, w = upscaled.shape
        masks = (readers @ upscaled.reshape(n, c, h * w)).reshape(n, -1, h, w)
        iou = decoder.iou_prediction_head(states[:, 0])
        return masks[:, :1], iou[:, :1]

    def _decode_one(self, image_embedding: SamImageEmbedding, prompt: DecoderPrompt) -> MaskPrediction:
        tokens = self._prompt_tokens(prompt, image_embedding.original_size).unsqueeze(0)
        gate = None if prompt.embedding is None else tokens[0, -1:]  # the embedding token comes last
        low_res, iou = self._run_decoder(image_embedding.embedding, tokens, gate)
        logits = postprocess_logits(low_res, image_embedding.input_size, image_embedding.original_size,
                                    self.image_size)
        return MaskPrediction(mask=(logits[0] > 0.0).cpu().numpy(),
                              score=float(iou.float().clamp(0.0, 1.0)[0, 0]))

    def _prompt_tokens(self, prompt: DecoderPrompt, original_size: Size) -> torch.Tensor:
        """A prompt → its sparse tokens (k, 256): 2 box-corner tokens and/or 1 embedding token."""
        tokens = []
        if prompt.box is not None:
            box = box_to_input_frame(prompt.box, original_size, self.image_size)
            boxes = torch.tensor([box], dtype=torch.float32, device=self.device)
            corners, _ = self.sam.prompt_encoder(points=None, boxes=boxes, masks=None)  # (1, 2, 256)
            tokens.append(corners[0].to(self.dtype))
        if prompt.embedding is not None:
            tokens.append(self._embedding_token(prompt.embedding))
        if not tokens:
            raise PartError(f"the prompt for {prompt.phrase!r} has neither an embedding nor a box")
        return torch.cat(tokens)

    def _embedding_token(self, embedding: Any) -> torch.Tensor:
        token = torch.as_tensor(embedding).to(device=self.device, dtype=self.dtype)
        if token.numel() != self.prompt_dim:
            raise PartError(f"a SAM prompt embedding must have {self.prompt_dim} values, "
                            f"got shape {tuple(token.shape)}")
        return token.reshape(1, self.prompt_dim)

    # -- training -----------------------------------------------------------------------------
    def predict_logits(
        self, embeddings: SamImageEmbedding, prompt_embeddings: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Mask logits (n_i, H_i, W_i), float32 on the module's device, for (n_i, 256) prompts
        per image; differentiable w.r.t. the mask decoder and the prompt embeddings."""
        if len(prompt_embeddings) != embeddings.embedding.shape[0]:
            raise PartError(f"predict_logits got prompts for {len(prompt_embeddings)} images and "
                            f"embeddings of {embeddings.embedding.shape[0]}")
        return [self._logits_one(embeddings, i, prompts) for i, prompts in enumerate(prompt_embeddings)]

    def _logits_one(self, embeddings: SamImageEmbedding, i: int, prompts: torch.Tensor) -> torch.Tensor:
        original_size = embeddings.original_sizes[i]
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_dim:
            raise PartError(f"prompt embeddings must be (n, {self.prompt_dim}), got {tuple(prompts.shape)}")
        if prompts.shape[0] == 0:
            return torch.zeros((0, *original_size), device=self.device)
        prompts = prompts.to(device=self.device, dtype=self.dtype)
        low_res, _ = self._run_decoder(embeddings.embedding[i : i + 1], prompts.unsqueeze(1), prompts)
        return postprocess_logits(low_res, embeddings.input_sizes[i], original_size, self.image_size)

    def geometric_logits(
        self, embeddings: SamImageEmbedding, index: int, *, boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's own prompts, for pretraining a decoder (``pretrain-sam-tiny``): n boxes (n, 4)
        XYXY or n foreground points (n, 2) xy, in original pixels of image ``index`` → mask
        logits (n, H, W), float32, and predicted IoU (n,); differentiable w.r.t. the decoder,
        the image embedding and, when it trains, the prompt encoder's learned embeddings."""
        if (boxes is None) == (points is None):
            raise PartError("geometric_logits takes either boxes or points")
        original_size = embeddings.original_sizes[index]
        scale = torch.tensor(input_frame_scale(original_size, self.image_size), device=self.device)
        if boxes is not None:
            corners = boxes.to(self.device, torch.float32).reshape(-1, 2, 2) * scale
            tokens, _ = self.sam.prompt_encoder(points=None, boxes=corners.reshape(-1, 4), masks=None)
        else:
            coords = points.to(self.device, torch.float32).reshape(-1, 1, 2) * scale
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
            tokens, _ = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou = self._run_decoder(embeddings.embedding[index : index + 1], tokens.to(self.dtype))
        logits = postprocess_logits(low_res, embeddings.input_sizes[index], original_size, self.image_size)
        return logits, iou[:, 0].float()

    # -- shared -------------------------------------------------------------------------------
    def _run_decoder(
        self, embedding: torch.Tensor, tokens: torch.Tensor, gate_prompts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (1, 256, e, e) and n prompts' tokens (n, k, 256) → low-res
        logits (n, 1, 4e, 4e) and predicted IoU (n, 1); single-mask output, no mask prompt.
        ``gate_prompts`` (n, 256), the embedding prompts, feed the prompt gate when there is one."""
        encoder = self.sam.prompt_encoder
        e_h, e_w = encoder.image_embedding_size
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(tokens.shape[0], -1, e_h, e_w)
        if self.prompt_gate is not None and gate_prompts is not None:
            dense = dense + self.prompt_gate(embedding, gate_prompts)
        return self.sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=encoder.get_dense_pe().to(self.dtype),
            sparse_prompt_embeddings=tokens,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def build_sam_decoder(settings: SamSettings | dict[str, Any], context: Any) -> SamMaskDecoder:
    """The registry's builder: a :class:`SamMaskDecoder` in eval mode on the preset's device/dtype."""
    if not isinstance(settings, SamSettings):
        settings = SamSettings.model_validate(settings)
    # a random full-size SAM is built where it will run (no float32 CPU copy; nothing on meta)
    random = settings.random_init and settings.checkpoint is None
    with building_on(context.device, context.dtype) if random else contextlib.nullcontext():
        sam = sam_from_settings(settings)
    with seeded_rng(settings.seed):  # the gate's init is seeded too, the caller's RNG untouched
        decoder = SamMaskDecoder(sam, train_image_encoder=settings.train_image_encoder,
                                 prompt_gate=settings.prompt_gate)
    decoder.to(device=torch_device(context.device), dtype=torch_dtype(context.dtype))
    return decoder.eval()


def sam_from_settings(settings: SamSettings) -> nn.Module:
    """The ``Sam`` the settings describe: from the checkpoint, or seeded random weights (tiny,
    or any size with ``random_init``); a full size with neither raises WeightsNotFoundError."""
    if settings.checkpoint is None and settings.size != "tiny" and not settings.random_init:
        raise WeightsNotFoundError(missing_weights_message(settings.size))
    # Seeded private generators: identical builds, the caller's RNG untouched.
    with seeded_rng(settings.seed):
        return build_sam_model(settings.size, settings.checkpoint)
