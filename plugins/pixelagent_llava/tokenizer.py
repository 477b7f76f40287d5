"""Tokenizers: the real LLaVA one from its checkpoint, or a tiny byte-level BPE built offline.

Both get the same special tokens: ``[SEG]`` and ``[OBJ]`` (added as special tokens so they are
never split) and the ``<image>`` placeholder that the visual tokens replace.
"""

from __future__ import annotations

import copy
from importlib import resources

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pixelagent.errors import WeightsNotFoundError
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN

IMAGE_TOKEN = "<image>"
TINY_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, SEG_TOKEN, OBJ_TOKEN]


def load_tokenizer(source: str, setting_name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a LLaVA checkpoint (local dir or hub id), with our special tokens added."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(
            f"cannot load the tokenizer of {source!r} ({type(exc).__name__}); fetch the checkpoint with "
            f"`hf download {source}` and point {setting_name} at its local directory") from None
    return add_special_tokens(tokenizer)


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add ``[SEG]``, ``[OBJ]``, ``<image>`` and a pad token where missing (idempotent)."""
    missing = [t for t in (SEG_TOKEN, OBJ_TOKEN, IMAGE_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if tokenizer.pad_token is None:
        # LLaVA's vicuna tokenizer has no pad token; padding with <unk> is what LLaVA does.
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def plain_text_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` that reads special-token strings as ordinary characters.

    User text goes through it, so a question containing ``[SEG]``, ``[OBJ]``, ``</s>`` or
    ``<image>`` is tokenised as those characters and can never become a control token, the way
    chat templates escape role markers. A separate copy with the setting fixed, rather than
    ``split_special_tokens=True`` per call: transformers implements that argument by flipping a
    flag on the shared Rust tokenizer, which two sessions tokenising at once from two threads
    could interleave. Text without special-token strings tokenises exactly as before.
    """
    plain = copy.deepcopy(tokenizer)
    plain.split_special_tokens = True
    backend = getattr(plain, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_special_tokens"):
        backend.encode_special_tokens = True
    return plain


def build_tiny_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the bundled corpus: deterministic, offline, any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = resources.files(__package__).joinpath("tiny_corpus.txt").read_text(encoding="utf-8")
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(corpus.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    return add_special_tokens(tokenizer)
