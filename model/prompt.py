"""Prompt building: the release's template, its video placeholder, and its BOS-per-chunk quirk.

Template (one user turn; the chunks are `tpo.contract.prompt.prompt_chunks`, shared with the runtime):

    [INST] <Video>{96 visual slots}</Video>{msg}[/INST] [INST] {question} [/INST]

`msg` is empty, or the release's frame-time sentence when a video question contains "timestamp"
(`tpo.contract.prompt.timestamp_sentence`; callers pass the sampled frame indices and the fps).

The release tokenises each text chunk on its own with `add_special_tokens=True`, so every chunk
starts with BOS: three BOS in one prompt ("[INST] <Video>", "</Video>{msg}[/INST]",
" [INST] {question} [/INST] "). The model was trained on prompts made that way, so we REPRODUCE
the quirk (decision recorded in docs/model.md and pinned by tests/model/test_tokenizer_prompt.py);
`one_bos=True` builds the conventional single-BOS prompt for experiments. A chunk that starts with a
space begins with the lone '▁' piece, as SentencePiece gives it (`tpo.model.tokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tpo.contract.prompt import VISUAL, prompt_chunks
from tpo.errors import InputError

from .tokenizer import TaskTokenIds, task_token_ids

MAX_PROMPT_TOKENS = 1024   # the release's max_length for the whole prompt


@dataclass
class Prompt:
    """input_ids [L] int64; visual_mask [L] bool (the slots the connector output replaces);
    track_box_positions: indices of `<track_box>` tokens (each takes a user box's embedding)."""

    input_ids: torch.Tensor
    visual_mask: torch.Tensor
    track_box_positions: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def build_prompt(
    tokenizer,
    question: str,
    num_visual_tokens: int,
    media: str = "video",
    frame_indices: Sequence[int] | None = None,
    fps: float | None = None,
    one_bos: bool = False,
    max_tokens: int = MAX_PROMPT_TOKENS,
) -> Prompt:
    """The prompt's ids for `question` about a video (or an image). frame_indices / fps: the video frames the
    visual tokens are made of and the video's rate, for the release's frame-time sentence (required when the
    question contains "timestamp"). Every PyTorch-side caller (generate, the export's examples, training
    samples) builds its prompt here."""
    chunks = prompt_chunks(question, media, frame_indices, fps)
    ids: list[int] = []
    visual: list[bool] = []
    ids_info: TaskTokenIds = task_token_ids(tokenizer)
    for i, chunk in enumerate(chunks):
        if chunk is VISUAL:
            ids += [ids_info.video_placeholder] * num_visual_tokens
            visual += [True] * num_visual_tokens
            continue
        add_bos = (i == 0) or not one_bos
        piece = tokenizer(chunk, add_special_tokens=False).input_ids
        if add_bos:
            piece = [ids_info.bos] + piece
        ids += piece
        visual += [False] * len(piece)
    if len(ids) > max_tokens:
        raise InputError(
            f"question: the prompt is {len(ids)} tokens, over the limit of {max_tokens} "
            f"({num_visual_tokens} of them visual); shorten the question"
        )
    input_ids = torch.tensor(ids, dtype=torch.long)
    return Prompt(
        input_ids=input_ids,
        visual_mask=torch.tensor(visual, dtype=torch.bool),
        track_box_positions=(input_ids == ids_info.track_box).nonzero().flatten(),
    )
