"""The release's prompt ids, computed here independently with the `sentencepiece` library, equal the model side's
(`build_prompt`) and the runtime's (`TextCodec` on the tokenizer.json the export saves).

The release's slow, legacy LlamaTokenizer splits a text on its added tokens and runs SentencePiece on each piece
in between; its prompt is three text chunks, each tokenised on its own after one BOS, around the visual slots.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import sentencepiece as spm

from tpo.contract import Tokens
from tpo.errors import CheckpointError, InputError
from tpo.export.exporter import save_tokenizer
from tpo.model.prompt import build_prompt
from tpo.model.tokenizer import ASSET_DIR, load_tokenizer, task_token_ids
from tpo.runtime.text import TextCodec
from tpo.sampling import middle_frame_indices

ADDED = ["<box_begin>", "<time_begin>", "<temp>", "<boxes>", "<track_begin>", "<tracking>", "<track_box>"]
FPS = 30.0
INDICES = middle_frame_indices(16, 163)          # 16 frames of a 163-frame clip: times such as 0.35 -> 0.4
QUESTIONS = [                                    # (question, media)
    ("track the red circle", "video"),
    ("where is the dog?", "image"),
    ("At which timestamp does the red circle appear?", "video"),       # gets the frame-time sentence
    ("Describe the timestamp of each shape, please.", "video"),
    ("Is there a timestamp on this picture?", "image"),                  # an image never does
    ("how many shapes are there?", "video"),                             # a conversation question
    ("track this <track_box>  then   stop", "video"),                   # an added token, runs of spaces
    ("Qu'est-ce que c'est ? 123 — ☃", "video"),                          # accents, digits, byte fallback
]
TEXTS = [" hello", "hello", "The red square is here.", "a  b", " <time_begin><temp>", "x <boxes> y", "\tnew\nline "]


def sp_text_ids(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """The slow tokenizer's ids without special tokens: added tokens by id, SentencePiece between them."""
    n = sp.get_piece_size()
    added = {"<unk>": sp.unk_id(), "<s>": sp.bos_id(), "</s>": sp.eos_id(), **{t: n + i for i, t in enumerate(ADDED)}}
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, added)) + ")", text):
        if part in added:
            ids.append(added[part])
        elif part:
            ids += sp.encode(part)
    return ids


def release_sentence(question: str, media: str) -> str:
    """The release's load_video message for a question containing "timestamp" (its frame indices are numpy)."""
    if media != "video" or "timestamp" not in question:
        return ""
    idx = np.array(INDICES)
    sec = ", ".join([str(round(f / FPS, 1)) for f in idx])
    return f" The video contains {len(idx)} frames sampled at {sec} seconds. "


def release_prompt_ids(sp, question: str, media: str, num_visual: int) -> list[int]:
    tag = "Video" if media == "video" else "Image"
    msg = release_sentence(question, media)
    chunks = [f"[INST] <{tag}>", f"</{tag}>{msg.rstrip()}[/INST]", f" [INST] {question} [/INST] "]
    bos = sp.bos_id()
    return ([bos] + sp_text_ids(sp, chunks[0]) + [0] * num_visual + [bos] + sp_text_ids(sp, chunks[1])
            + [bos] + sp_text_ids(sp, chunks[2]))


@pytest.fixture(scope="module", params=["videochat-tpo", "tiny"])
def sides(request, reference_dir, tmp_path_factory):
    """(sentencepiece, the model side's tokenizer, the runtime's TextCodec on the exported tokenizer.json)."""
    folder = reference_dir if request.param == "videochat-tpo" else ASSET_DIR / "tiny"
    tok = load_tokenizer(folder)
    out = tmp_path_factory.mktemp(f"export-{request.param}")
    entry = save_tokenizer(tok, folder, out)
    ids = task_token_ids(tok)
    tokens = Tokens(ids.bos, ids.eos, ids.video_placeholder, ids.track_box, dict(ids.triggers), dict(ids.placeholders),
                    len(tok))
    codec = TextCodec(out / entry.file, tokens, num_visual_tokens=96, max_prompt_tokens=1024)
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")), tok, codec


def test_the_lone_space_piece_starts_a_chunk_that_starts_with_a_space(reference_dir):
    """The issue's example, and the video prompt of "track the red circle" pinned as numbers."""
    tok = load_tokenizer(reference_dir)
    assert tok(" hello", add_special_tokens=False).input_ids == [28705, 6312, 28709]
    ids = build_prompt(tok, "track the red circle", 96).input_ids.tolist()
    assert ids[:7] == [1, 733, 16289, 28793, 523, 11761, 28767] and ids[7:103] == [0] * 96
    assert ids[103:] == [1, 1867, 11761, 28767, 28792, 28748, 16289, 28793,
                         1, 28705, 733, 16289, 28793, 3508, 272, 2760, 9661, 733, 28748, 16289, 28793, 28705]


@pytest.mark.parametrize("question, media", QUESTIONS)
def test_prompt_ids_are_sentencepieces_on_both_sides(sides, question, media):
    sp, tok, codec = sides
    want = release_prompt_ids(sp, question, media, 96)
    model_side = build_prompt(tok, question, 96, media=media, frame_indices=INDICES, fps=FPS)
    runtime = codec.prompt(question, media, INDICES, FPS)
    assert model_side.input_ids.tolist() == want
    assert runtime.input_ids.tolist() == want
    np.testing.assert_array_equal(runtime.visual_mask, model_side.visual_mask.numpy())
    np.testing.assert_array_equal(runtime.track_box_positions, model_side.track_box_positions.numpy())
    assert int(model_side.visual_mask.sum()) == 96 and want.count(sp.bos_id()) == 3


@pytest.mark.parametrize("text", TEXTS + [q for q, _ in QUESTIONS])
def test_plain_text_ids_are_sentencepieces_on_both_sides(sides, text):
    """Answers (training targets), the temporal head's question ids: tokenised without BOS, as one chunk."""
    sp, tok, codec = sides
    want = sp_text_ids(sp, text)
    assert tok(text, add_special_tokens=False).input_ids == want
    assert codec.encode(text) == want
    assert tok(text).input_ids == [sp.bos_id()] + want


def test_the_timestamp_sentence_is_the_releases(reference_dir):
    tok = load_tokenizer(reference_dir)
    q = "At which timestamp does the red circle appear?"
    with_times = tok.decode(build_prompt(tok, q, 4, frame_indices=[0, 7, 14, 45], fps=20.0).input_ids)
    assert "</Video> The video contains 4 frames sampled at 0.0, 0.4, 0.7, 2.2 seconds.[/INST]" in with_times
    plain = build_prompt(tok, "When does the red circle appear?", 4).input_ids.tolist()
    assert tok.decode(plain).count("The video contains") == 0
    with pytest.raises(InputError, match="timestamp.*fps"):
        build_prompt(tok, q, 4)                 # a timestamp question needs the frame times


def test_an_old_tokenizer_json_is_refused(reference_dir, tmp_path):
    """The tokenizer.json exports wrote before: transformers' Metaspace pre-tokenizer drops the lone '▁'."""
    from transformers import LlamaTokenizer

    old = LlamaTokenizer.from_pretrained(str(reference_dir), local_files_only=True, legacy=True)
    assert old(" hello", add_special_tokens=False).input_ids == [6312, 28709]      # the bug this guards against
    path = tmp_path / "tokenizer.json"
    old.backend_tokenizer.save(str(path))
    tokens = Tokens(1, 2, 0, 32006, {32000: "region"}, {"region": 32003}, 32007)
    with pytest.raises(CheckpointError, match="pre-tokenizer"):
        TextCodec(path, tokens, 96, 1024)


def test_the_saved_tokenizer_json_has_no_pre_tokenizer_and_raw_added_tokens(sides):
    _, tok, _ = sides
    saved = json.loads(tok.backend_tokenizer.to_str())
    assert saved["pre_tokenizer"] is None
    assert all(not t["normalized"] for t in saved["added_tokens"])


def test_the_session_asks_a_timestamp_question_as_generate_does(fp32_artifacts, monkeypatch):
    """End to end on the exported tiny checkpoint: the session's prompt carries the frame-time sentence of the
    frames it samples, equal to the model side's, and the answer's tokens equal `generate`'s."""
    from tpo.data.synthetic import make_clip
    from tpo.model.checkpoint import default_checkpoint, load_checkpoint
    from tpo.model.generate import generate
    from tpo.model.preprocess import Video
    from tpo.runtime.session import open as open_session

    session = open_session(fp32_artifacts, backend="onnxruntime")
    model, _ = load_checkpoint(default_checkpoint(), dtype="fp32")
    tok = load_tokenizer(default_checkpoint())
    clip = make_clip(0, 1000)
    frames, fps = clip.frames[:10], float(clip.fps)
    question = "At which timestamp does the first shape appear?"
    seen = []
    prompt = session.text.prompt
    monkeypatch.setattr(session.text, "prompt", lambda *args: seen.append(prompt(*args)) or seen[-1])
    got = session.ask(question, frames, fps)
    want = build_prompt(tok, question, session.text.num_visual_tokens, fps=fps,
                        frame_indices=middle_frame_indices(session.pre.mllm.num_frames, len(frames)))
    assert "frames sampled at" in tok.decode(want.input_ids)
    assert seen[0].input_ids.tolist() == want.input_ids.tolist()
    assert got.token_ids == generate(model, tok, Video(frames, fps), question).token_ids
