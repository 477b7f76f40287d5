"""The vicuna-v1 conversation template of LLaVA-v1.6-vicuna (and LISA), as token segments.

Text form::

    {system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...

The conversation is tokenized piece by piece (prompt pieces and answer pieces), and training
and inference use the same pieces. Questions are user text and go through a tokenizer that
reads ``[SEG]``, ``</s>``, ``<image>`` and every other special-token string as plain characters
(:func:`~pixelagent_llava.tokenizer.plain_text_tokenizer`); answers keep their markup. Because
training and inference share the pieces, so a dialogue's tokens are identical whether it was
generated turn by turn or read from a dataset. That is what lets a session keep the key/value
cache of the dialogue so far and only run the new turn.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from pixelagent_llava.tokenizer import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN, plain_text_tokenizer

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@dataclass(frozen=True)
class Exchange:
    """One turn: the question, and the answer as text or as the exact token ids generated."""

    question: str
    answer: str | None = None
    answer_ids: tuple[int, ...] | None = None


class _TokenCache:
    """The token ids of recently seen text pieces, least recently used out first once they hold
    more than ``budget`` characters (about 13 bytes a character with the ids: ~13 MB at most,
    whatever users send); pieces over ``longest`` characters are not kept. Shared by the
    sessions of a model, so it takes a lock."""

    def __init__(self, budget: int = 1_000_000, longest: int = 4096) -> None:
        self.budget, self.longest, self.chars = budget, longest, 0
        self._ids: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bool]) -> tuple[int, ...] | None:
        with self._lock:
            ids = self._ids.get(key)
            if ids is not None:
                self._ids.move_to_end(key)
            return ids

    def put(self, key: tuple[str, bool], ids: list[int]) -> None:
        if len(key[0]) > self.longest:
            return
        with self._lock:
            if key not in self._ids:
                self.chars += len(key[0])
            self._ids[key] = tuple(ids)
            self._ids.move_to_end(key)
            while self.chars > self.budget:
                old, _ = self._ids.popitem(last=False)
                self.chars -= len(old[0])


class VicunaTemplate:
    """Turns exchanges into token ids and labels (answers supervised, prompts not)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._plain = plain_text_tokenizer(tokenizer)
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self._cache = _TokenCache()

    def _text(self, text: str, plain: bool = False) -> list[int]:
        """Token ids of ``text``; ``plain``: special-token strings in it count as characters.

        Remembered (see :class:`_TokenCache`): every turn re-reads the whole dialogue to fit it
        into the context window, which without this tokenised each earlier piece again (358
        tokenizer calls at turn 120, a third of the turn).
        """
        known = self._cache.get((text, plain))
        if known is not None:
            return list(known)
        ids = (self._plain if plain else self.tokenizer)(text, add_special_tokens=False)["input_ids"]
        self._cache.put((text, plain), ids)
        return list(ids)

    def prompt_ids(self, question: str, first: bool) -> list[int]:
        """The user piece of a turn, ending with ``ASSISTANT:`` (the first carries the image).

        The template's own text holds no special tokens, so the whole piece is read as plain
        text: the user's question cannot add an ``[SEG]``, an ``</s>`` or a second image slot.
        """
        if not first:
            return self._text(f"USER: {question} ASSISTANT:", plain=True)
        head = [self.bos_id] if self.bos_id is not None else []
        return (head + self._text(f"{SYSTEM} USER: ", plain=True) + [self.image_id]
                + self._text(f"\n{question} ASSISTANT:", plain=True))

    def answer_ids(self, exchange: Exchange) -> list[int]:
        """The assistant piece: the generated ids as they were, or the answer text + ``</s>``.

        The answer follows ``ASSISTANT:`` after one space. A generated answer's text (a reply's
        ``raw_text``, as a saved session or a dropped cache gives it back) already starts with
        it, because its first token carries the space; adding another would feed the model an
        extra space token, and the next turns would differ from the dialogue run without a break.
        """
        if exchange.answer_ids is not None:
            return list(exchange.answer_ids)
        answer = exchange.answer
        if not answer:  # the model ended at once: its answer was </s> alone
            return [self.eos_id]
        return self._text(answer if answer.startswith(" ") else f" {answer}") + [self.eos_id]

    def encode(self, exchanges: Sequence[Exchange]) -> tuple[list[int], list[int]]:
        """Ids and labels of a whole dialogue; the last exchange may have no answer yet.

        Labels are -100 on prompt pieces, the ids themselves on answer pieces.
        """
        ids: list[int] = []
        labels: list[int] = []
        for index, exchange in enumerate(exchanges):
            prompt = self.prompt_ids(exchange.question, first=index == 0)
            ids += prompt
            labels += [-100] * len(prompt)
            if exchange.answer is not None or exchange.answer_ids is not None:
                answer = self.answer_ids(exchange)
                ids += answer
                labels += answer
        return ids, labels


class LlavaV1Template(VicunaTemplate):
    """LLaVA-v1's ``llava_v1`` conversation, as the LISA releases were trained and chat with it.

    LISA's ``chat.py`` builds ``conv_templates["llava_v1"]`` (the system line above, roles
    ``USER`` / ``ASSISTANT``, separators ``" "`` and ``"</s>"``) with the first question
    ``<im_start><image><im_end>\\n{question}`` (``mm_use_im_start_end: true``), and
    ``tokenizer_image_token`` encodes the text on each side of ``<image>`` separately. Under
    transformers 4.31 (LISA's pin) the slow LLaMA tokenizer strips the whitespace on both sides
    of every added token and gives each text chunk SentencePiece's dummy ``▁`` prefix, so the
    model saw::

        <s> {system} USER: <im_start> [256 visual tokens] <im_end> {q1} ASSISTANT: {a1}</s> USER: {q2} ...

    with no space before ``<im_start>``, no newline after ``<im_end>``, and answers split at
    ``[SEG]`` into separately encoded chunks (``Sure,`` ``[SEG]`` ``.``). These pieces reproduce
    that; the later prompt pieces hold no added token, so encoding them alone already matches.

    With ``image_markers=False`` (a LLaVA-v1 checkpoint trained without ``<im_start>`` /
    ``<im_end>``) the chunks are ``{system} USER: `` and ``\\n{q1} ASSISTANT:``, as
    ``tokenizer_image_token`` cuts them.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_markers: bool = True) -> None:
        super().__init__(tokenizer)
        self.image_markers = image_markers
        if image_markers:
            ids = tokenizer.convert_tokens_to_ids([IM_START_TOKEN, IM_END_TOKEN])
            if tokenizer.unk_token_id in ids:
                raise ValueError(f"the tokenizer has no {IM_START_TOKEN} / {IM_END_TOKEN} tokens, which a "
                                 "checkpoint with mm_use_im_start_end: true needs")
            self.im_start_id, self.im_end_id = ids
        self._added = set(tokenizer.get_added_vocab())
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))
                                 + ")") if self._added else None

    def prompt_ids(self, question: str, first: bool) -> list[int]:
        """The user piece of a turn, ending with ``ASSISTANT:``; the first carries the image."""
        if not first:
            return self._text(f"USER: {question} ASSISTANT:", plain=True)
        head = [self.bos_id] if self.bos_id is not None else []
        if not self.image_markers:
            return (head + self._text(f"{SYSTEM} USER: ", plain=True) + [self.image_id]
                    + self._text(f"\n{question} ASSISTANT:", plain=True))
        return (head + self._text(f"{SYSTEM} USER:", plain=True) + [self.im_start_id, self.image_id, self.im_end_id]
                + self._text(f"{question.lstrip()} ASSISTANT:", plain=True))

    def answer_ids(self, exchange: Exchange) -> list[int]:
        """The assistant piece: the generated ids as they were, or the answer's chunks + ``</s>``."""
        if exchange.answer_ids is not None:
            return list(exchange.answer_ids)
        return self._chunked(exchange.answer) + [self.eos_id]

    def _chunked(self, text: str) -> list[int]:
        """``text`` cut at added tokens (``[SEG]``, ``[OBJ]``, ...), each text chunk stripped and
        encoded alone (so it gets the dummy ``▁`` prefix), as LISA's tokenizer did."""
        pieces = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for piece in pieces:
            if piece in self._added:
                ids.append(self.tokenizer.convert_tokens_to_ids(piece))
            elif piece.strip():
                ids += self._text(piece.strip())
        return ids
