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


#: LLaVA-v1's image markers around the visual tokens (``mm_use_im_start_end: true``, as in LISA).
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"


def load_checkpoint_tokenizer(folder: str, setting_name: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a checkpoint folder, with our special tokens added.

    Tokens the checkpoint already has keep their ids (LISA-7B-v1: ``<im_patch>`` 32000,
    ``<im_start>`` 32001, ``<im_end>`` 32002, ``[SEG]`` 32003, from its ``added_tokens.json``).
    A folder with only a SentencePiece ``tokenizer.model`` (the LISA releases) needs the
    ``sentencepiece`` and ``protobuf`` packages for transformers to read it; without them this
    says so in one line instead of transformers' fallback warnings.
    """
    from pathlib import Path

    from pixelagent.errors import MissingDependencyError

    path = Path(folder)
    if not (path / "tokenizer.json").is_file() and (path / "tokenizer.model").is_file():
        missing = [name for name, module in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))
                   if not _importable(module)]
        if missing:
            raise MissingDependencyError(
                f"the tokenizer of {folder} is a SentencePiece tokenizer.model, which needs {' and '.join(missing)} "
                f"to read: pip install {' '.join(missing)} (or convert the checkpoint once where they are installed; "
                "the converted model carries a tokenizer.json)")
    if _tokenizer_class(path).startswith("LlamaTokenizer"):
        # AutoTokenizer would first parse config.json, and a LLaVA-v1 one (model_type "llava")
        # is not transformers' LlavaConfig
        from transformers import LlamaTokenizer

        try:
            tokenizer = LlamaTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise WeightsNotFoundError(f"cannot load the tokenizer of {folder!r} ({type(exc).__name__}); "
                                       f"re-download the checkpoint or point {setting_name} at a complete copy") from None
        return added_tokens_special(add_special_tokens(tokenizer))
    return added_tokens_special(load_tokenizer(str(path), setting_name))


def added_tokens_special(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Mark every added token special (ids unchanged).

    LISA added ``[SEG]`` with ``tokenizer.add_tokens("[SEG]")``, not as a special token, and
    LLaVA's ``<im_start>`` / ``<im_end>`` / ``<im_patch>`` may come the same way; the
    plain-text tokenizer that reads user text only splits special tokens, so a question
    typing "[SEG]" would otherwise become the real token.
    """
    from tokenizers import AddedToken

    plain = [token.content for token in tokenizer.added_tokens_decoder.values() if not token.special]
    if plain:
        tokenizer.add_tokens([AddedToken(content, special=True, normalized=False) for content in plain],
                             special_tokens=True)
    return tokenizer


def _tokenizer_class(folder) -> str:
    import json

    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("tokenizer_class") or "") if isinstance(config, dict) else ""


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False
