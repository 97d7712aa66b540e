"""The release's prompt as text: its chunks and its timestamp sentence, written once for both sides.

The PyTorch side (`tpo.model.prompt.build_prompt`, transformers' tokenizer) and the runtime
(`tpo.runtime.text.TextCodec.prompt`, the exported tokenizer.json) tokenise the same chunks, each on its own
with one BOS in front, as the release does; tests/runtime/test_text_prompt.py pins that both give the ids
sentencepiece gives. Template (one user turn):

    [INST] <Video>{visual slots}</Video>{msg}[/INST] [INST] {question} [/INST]

`msg` is empty except for a video question containing "timestamp": then the release puts in the sentence its
`load_video(..., return_msg=True)` writes, " The video contains N frames sampled at t1, t2, ... seconds. "
(t = frame index / fps rounded to 0.1 s; the release's indices are a numpy array, so `round` is numpy's,
rint(t * 10) / 10: 0.35 -> 0.4 where Python's float `round(t, 1)` gives 0.3; printed as `str` prints a float),
and the template's `msg.rstrip()` drops the sentence's trailing space. Plain Python (the contract imports no
numpy): Python's `round(y)` of a float is numpy's `rint`, half to even.
"""

from __future__ import annotations

from collections.abc import Sequence

from tpo.errors import InputError

from .tasks import MEDIA

TIMESTAMP_WORD = "timestamp"     # a video question containing it gets the frame-time sentence (case-sensitive)
VISUAL = None                    # the chunk that stands for the visual slots


def check_question(question: str) -> str:
    """The question as the template holds it (stripped); an empty one is the user's mistake."""
    if not isinstance(question, str) or not question.strip():
        raise InputError("question: empty; ask something, e.g. 'track the red circle'")
    return question.strip()


def timestamp_sentence(question: str, frame_indices: Sequence[int] | None, fps: float | None) -> str:
    """The release's frame-time sentence for `question` about frames `frame_indices` of a video at `fps`
    ('' when the question does not contain "timestamp")."""
    if TIMESTAMP_WORD not in question:
        return ""
    if frame_indices is None or fps is None or len(frame_indices) == 0:
        raise InputError(f"question: it asks for a {TIMESTAMP_WORD}, which needs the sampled frames' indices "
                         "and the video's fps to state the frame times")
    if not fps > 0:
        raise InputError(f"fps must be > 0 to state frame times, got {fps}")
    seconds = ", ".join(str(round(int(i) / float(fps) * 10) / 10) for i in frame_indices)   # numpy's round
    return f" The video contains {len(frame_indices)} frames sampled at {seconds} seconds. "


def prompt_chunks(question: str, media: str = "video", frame_indices: Sequence[int] | None = None,
                  fps: float | None = None) -> list[str | None]:
    """The text chunks of the prompt in order, `VISUAL` where the visual slots go; each text chunk is
    tokenised on its own after a BOS. frame_indices/fps: the video frames the visual tokens come from (only
    read for a question containing "timestamp"; an image never gets the sentence)."""
    q = check_question(question)
    if media not in MEDIA:
        raise InputError(f"media must be one of {MEDIA}, got {media!r}")
    tag = "Video" if media == "video" else "Image"
    msg = timestamp_sentence(q, frame_indices, fps) if media == "video" else ""
    return [f"[INST] <{tag}>", VISUAL, f"</{tag}>{msg.rstrip()}[/INST]", f" [INST] {q} [/INST] "]
