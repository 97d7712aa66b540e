"""Prompt building, tokenisation and answer text on the edge: the `tokenizers` library only (no torch, no
transformers). The export saves the LLM's tokenizer as `tokenizer/tokenizer.json`, the same Rust tokenizer
transformers runs, so the ids equal the PyTorch side's (pinned by tests/runtime/test_session.py,
`test_the_runtime_tokenizer_equals_the_model_side`).

The prompt reproduces `tpo.model.prompt.build_prompt`: the release's template with one BOS per text chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpo.contract import Tokens
from tpo.contract.tasks import TASK_TOKENS
from tpo.errors import CheckpointError, InputError


@dataclass
class PromptIds:
    """input_ids [L] int64, visual_mask [L] bool (slots the visual tokens replace), track_box_positions [K]."""

    input_ids: np.ndarray
    visual_mask: np.ndarray
    track_box_positions: np.ndarray


class TextCodec:
    def __init__(self, tokenizer_json: Path, tokens: Tokens, num_visual_tokens: int, max_prompt_tokens: int):
        from tokenizers import Tokenizer

        if not tokenizer_json.is_file():
            raise CheckpointError(f"{tokenizer_json}: missing tokenizer file")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.bos, self.eos = tokens.bos, tokens.eos
        self.video_placeholder = tokens.video_placeholder
        self.track_box = tokens.track_box
        self.triggers = dict(tokens.triggers)          # token id -> task name
        self.num_visual_tokens = num_visual_tokens
        self.max_prompt_tokens = max_prompt_tokens

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prompt(self, question: str, media: str = "video") -> PromptIds:
        """The release's template: [INST] <Video>{visual slots}</Video>[/INST] [INST] {question} [/INST]."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("question: empty; ask something, e.g. 'track the red circle'")
        tag = "Video" if media == "video" else "Image"
        ids: list[int] = []
        visual: list[bool] = []
        for chunk in (f"[INST] <{tag}>", None, f"</{tag}>[/INST]", f" [INST] {question.strip()} [/INST] "):
            if chunk is None:
                ids += [self.video_placeholder] * self.num_visual_tokens
                visual += [True] * self.num_visual_tokens
                continue
            piece = [self.bos] + self.encode(chunk)
            ids += piece
            visual += [False] * len(piece)
        if len(ids) > self.max_prompt_tokens:
            raise InputError(
                f"question: the prompt is {len(ids)} tokens, over the limit of {self.max_prompt_tokens} "
                f"({self.num_visual_tokens} of them visual); shorten the question")
        input_ids = np.asarray(ids, dtype=np.int64)
        return PromptIds(input_ids, np.asarray(visual, dtype=bool), np.flatnonzero(input_ids == self.track_box))

    def question_ids(self, question: str, limit: int) -> list[int]:
        """The question's own tokens (the temporal head's text features), at most `limit`."""
        ids = self.encode(question)[:limit]
        if not ids:
            raise InputError("question: no tokens to ground in time")
        return ids

    def answer(self, token_ids: list[int]) -> tuple[str, str]:
        """(text without task tokens, raw text) as `tpo.model.generate` makes them."""
        raw = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        text = raw
        for t in TASK_TOKENS:
            text = text.replace(t, "")
        return " ".join(text.split()), raw
