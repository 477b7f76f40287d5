"""SAM's published sizes (plus ``tiny`` for CPU tests) and preprocessing constants, as plain data.

Only the image encoder differs between sizes; the prompt encoder and mask decoder (prompt
dimension 256) are the same in all of them, so a checkpoint's decoder fits every size.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Channels of the image embedding and of every prompt token.
PROMPT_DIM = 256
#: Per-channel RGB mean and std (0-255 scale) SAM normalises its input with.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
#: Where Meta publishes the official checkpoints (for error messages; nothing is downloaded).
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class SamSize:
    """Image-encoder hyper-parameters of one SAM size.

    Attributes:
        name: ``"vit_h"``, ``"vit_l"``, ``"vit_b"`` or ``"tiny"``.
        embed_dim, depth, num_heads: the ViT's width, number of blocks and attention heads.
        global_attn_indexes: blocks with global attention (the others attend in windows).
        image_size: side of the square, padded input (longest image side is resized to it).
        patch_size: ViT patch size; the embedding is ``image_size // patch_size`` on a side.
        window_size: side of the attention windows, in patches.
        checkpoint_file: the official checkpoint's file name (``None`` for tiny).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    checkpoint_file: str | None = None

    @property
    def embedding_size(self) -> int:
        """Side ``e`` of the (256, e, e) image embedding: 64 for the official sizes, 16 for tiny."""
        return self.image_size // self.patch_size


SIZES: dict[str, SamSize] = {
    size.name: size
    for size in (
        SamSize("vit_h", 1280, 32, 16, (7, 15, 23, 31), checkpoint_file="sam_vit_h_4b8939.pth"),
        SamSize("vit_l", 1024, 24, 16, (5, 11, 17, 23), checkpoint_file="sam_vit_l_0b3195.pth"),
        SamSize("vit_b", 768, 12, 12, (2, 5, 8, 11), checkpoint_file="sam_vit_b_01ec64.pth"),
        # Small enough to build and run in milliseconds on a CPU: a 16x16 embedding, same decoder.
        SamSize("tiny", 64, 2, 2, (1,), image_size=128, patch_size=8, window_size=4),
    )
}
