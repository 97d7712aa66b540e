"""Prompt building, tokenisation and answer text on the edge: the `tokenizers` library only (no torch, no
transformers). The export saves the LLM's tokenizer as `tokenizer/tokenizer.json`, the same Rust tokenizer
transformers runs, so the ids equal the PyTorch side's (pinned by tests/runtime/test_session.py,
`test_the_runtime_tokenizer_equals_the_model_side`).

The prompt reproduces `tpo.model.prompt.build_prompt`: the release's template with one BOS per text chunk, its
chunks (and the frame-time sentence of a "timestamp" question) from `tpo.contract.prompt`. The tokenizer.json
must be the one the export writes since issue 14 (SentencePiece's normalisation, no pre-tokenizer): the older
one dropped the lone '▁' piece that starts the " [INST] ..." chunk in the release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpo.contract import Tokens
from tpo.contract.prompt import VISUAL, prompt_chunks
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
        if self.tokenizer.pre_tokenizer is not None:
            raise CheckpointError(
                f"{tokenizer_json}: a pre-tokenizer drops the '▁' piece that starts a chunk beginning with a space, "
                "so prompts differ from the release's (an export before issue 14); export again")
        self.bos, self.eos = tokens.bos, tokens.eos
        self.video_placeholder = tokens.video_placeholder
        self.track_box = tokens.track_box
        self.triggers = dict(tokens.triggers)          # token id -> task name
        self.num_visual_tokens = num_visual_tokens
        self.max_prompt_tokens = max_prompt_tokens

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prompt(self, question: str, media: str = "video", frame_indices: Sequence[int] | None = None,
               fps: float | None = None) -> PromptIds:
        """The release's template: [INST] <Video>{visual slots}</Video>{msg}[/INST] [INST] {question} [/INST],
        one BOS per text chunk; msg is the frame-time sentence of a video question containing "timestamp"
        (frame_indices: the frames the visual tokens are made of, fps: the video's rate)."""
        ids: list[int] = []
        visual: list[bool] = []
        for chunk in prompt_chunks(question, media, frame_indices, fps):
            if chunk is VISUAL:
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

    def question_truncated(self, question: str, limit: int) -> bool:
        """Whether `question_ids` cut the question (more than `limit` tokens)."""
        return len(self.encode(question)) > limit

    def answer(self, token_ids: list[int]) -> tuple[str, str]:
        """(text without task tokens, raw text) as `tpo.model.generate` makes them."""
        raw = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        text = raw
        for t in TASK_TOKENS:
            text = text.replace(t, "")
        return " ".join(text.split()), raw
