"""Tokenizers: the released one (Mistral SentencePiece + 7 task tokens) and the tiny one we build.

The release's `tokenizer_config.json` names `MultimodalLlamaTokenizer`, a class that exists only in
the release's own code; we load the same files with transformers' `LlamaTokenizer` directly, so no
remote code runs and nothing is fetched. Both tokenizers put the 7 task tokens right after the
SentencePiece pieces, in the release's order.

The ids must be the release's: its slow, legacy `LlamaTokenizer` splits a text on the added tokens and
runs SentencePiece on each piece in between, so " hello" is ['▁', '▁hell', 'o'] (the dummy prefix in
front of the space). transformers 5's `LlamaTokenizer` is a Rust tokenizer whose Metaspace pre-tokenizer
skips the dummy prefix when the text starts with a space (" hello" -> ['▁hell', 'o']) and whose merges
are ranked by piece id, not by SentencePiece's scores (runs of spaces merge first). `load_tokenizer`
therefore replaces its backend with `sentencepiece_backend`: the same vocabulary, merges ranked by score,
SentencePiece's normalisation as a normaliser, no pre-tokenizer, added tokens matched on the raw text.
The export saves that backend as tokenizer.json, so the runtime gets the same ids
(tests/runtime/test_text_prompt.py checks both against the `sentencepiece` library).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tpo.contract.tasks import TASK_TOKENS, TASKS
from tpo.data.synthetic import (  # the synthetic world's words: the tiny vocabulary
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
)
from tpo.errors import CheckpointError, ConfigError

ASSET_DIR = Path(__file__).parent / "assets" / "tokenizers"
REFERENCE_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "videochat-tpo"


@dataclass(frozen=True)
class TaskTokenIds:
    """Ids of the task tokens (fields in `TASK_TOKENS` order). Triggers are what the LLM emits;
    placeholders carry task embeddings. Which token belongs to which task is `tpo.contract.tasks`'s."""

    box_begin: int
    time_begin: int
    temp: int
    boxes: int
    track_begin: int
    tracking: int
    track_box: int
    bos: int = 1
    eos: int = 2
    video_placeholder: int = 0   # the 96 video slots hold id 0 (<unk>) before the splice

    @property
    def by_token(self) -> dict[str, int]:
        """task token string (`TASK_TOKENS`) -> its id."""
        return dict(zip(TASK_TOKENS, (self.box_begin, self.time_begin, self.temp, self.boxes, self.track_begin,
                                      self.tracking, self.track_box), strict=True))

    @property
    def triggers(self) -> dict[int, str]:
        """trigger id -> task name, for each registered task (a task whose trigger is not one of the
        vocabulary's task tokens cannot be emitted by this tokenizer, so it has no id here)."""
        ids = self.by_token
        return {ids[t.trigger]: t.name for t in TASKS.values() if t.trigger in ids}

    @property
    def placeholders(self) -> dict[str, int]:
        """task name -> the placeholder id whose embedding the task embedding replaces."""
        ids = self.by_token
        return {t.name: ids[t.placeholder] for t in TASKS.values() if t.placeholder in ids}


def resolve_tokenizer_dir(name_or_path: str | Path) -> Path:
    """A folder under model/assets/tokenizers by name, or a path to a tokenizer folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if (ASSET_DIR / str(name_or_path)).is_dir():
        return ASSET_DIR / str(name_or_path)
    if str(name_or_path) == "videochat-tpo" and REFERENCE_TOKENIZER.is_dir():
        return REFERENCE_TOKENIZER
    known = sorted(p.name for p in ASSET_DIR.iterdir()) if ASSET_DIR.is_dir() else []
    raise ConfigError(f"tokenizer {str(name_or_path)!r} not found: give a folder with tokenizer.model, or one of {known}")


def load_tokenizer(name_or_path: str | Path):
    """A `LlamaTokenizer` from a folder holding `tokenizer.model` (+ added tokens), offline."""
    from transformers import LlamaTokenizer

    folder = resolve_tokenizer_dir(name_or_path)
    if not (folder / "tokenizer.model").is_file():
        raise CheckpointError(f"{folder}: no tokenizer.model in the tokenizer folder")
    reference = sentencepiece_backend(folder / "tokenizer.model", [])   # refuses what it cannot reproduce
    tok = LlamaTokenizer.from_pretrained(str(folder), local_files_only=True, legacy=True)
    use_sentencepiece_ids(tok, reference, folder / "tokenizer.model")
    task_token_ids(tok)  # refuses a tokenizer without the task tokens in place
    return tok


def _sentencepiece_proto(model_file: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as e:  # protobuf's DecodeError, or an unreadable file
        raise CheckpointError(f"{model_file}: not a SentencePiece model ({e})") from None
    return proto


def sentencepiece_backend(model_file: Path, added_tokens: list[str]):
    """A `tokenizers.Tokenizer` that gives SentencePiece's ids for each text between added tokens.

    - vocabulary: the pieces with their ids; BPE with byte fallback, as the model says;
    - merges: every split of a normal piece into two normal pieces, ranked by the piece's score (ties in
      piece order), which is the order SentencePiece's BPE merges in; ranking by id instead (transformers 5)
      merges runs of spaces first, whose pieces score lowest in Mistral's model;
    - normaliser: SentencePiece's with an identity rule: the dummy prefix '▁' in front of every non-empty text
      (also of one that starts with a space), spaces escaped as '▁'; no pre-tokenizer;
    - added tokens (`added_tokens`, after the pieces; the special pieces keep their ids) match the raw text,
      so the text on each side of one is normalised on its own, as the release's slow tokenizer does.
    A model whose normalisation this does not express (a precompiled rule, whitespace removal, suffix
    whitespace) is refused rather than tokenised differently.
    """
    from sentencepiece.sentencepiece_model_pb2 import ModelProto
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    piece = ModelProto.SentencePiece
    proto = _sentencepiece_proto(model_file)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if spec.model_type != spec.BPE:
        problems.append("not a BPE model")
    if norm.name != "identity" or norm.precompiled_charsmap or norm.normalization_rule_tsv:
        problems.append(f"normalisation rule {norm.name!r}")
    if norm.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces")
    if not norm.escape_whitespaces or spec.treat_whitespace_as_suffix:
        problems.append("whitespace not escaped as a '▁' prefix")
    if problems:
        raise CheckpointError(f"{model_file}: SentencePiece options the tokenizer cannot reproduce: {', '.join(problems)}")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece: (i, p.score) for i, p in enumerate(proto.pieces) if p.type == piece.NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for text, (_, score) in normal.items():
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in normal and right in normal:
                ranked.append((-score, normal[left][0], normal[right][0], left, right))
    ranked.sort(key=lambda m: m[0])         # stable: ties stay in piece order, then split order
    backend = Tokenizer(BPE(vocab=vocab, merges=[(a, b) for *_, a, b in ranked],
                            unk_token=proto.pieces[spec.unk_id].piece, fuse_unk=True, byte_fallback=spec.byte_fallback))
    steps = [normalizers.Prepend("▁")] if norm.add_dummy_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    specials = [p.piece for p in proto.pieces if p.type in (piece.CONTROL, piece.UNKNOWN)]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in added_tokens])
    return backend


def slow_tokenizer_ids(model_file: Path, added: dict[str, int], texts: list[str]) -> list[list[int]]:
    """The ids the release's slow, legacy `LlamaTokenizer` gives each of `texts` (no BOS): split on the added
    tokens (`added`: content -> id, the special pieces included), the `sentencepiece` library on each piece
    between. The reference the export checks its tokenizer.json against."""
    import re

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pattern = "(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")"
    out = []
    for text in texts:
        ids: list[int] = []
        for part in re.split(pattern, text) if added else [text]:
            if part in added:
                ids.append(added[part])
            elif part:
                ids += sp.encode(part)
        out.append(ids)
    return out


def use_sentencepiece_ids(tok, reference, model_file: Path) -> None:
    """Give `tok` (a transformers `LlamaTokenizer`) SentencePiece's ids: its backend's vocabulary, merges,
    normaliser, pre-tokenizer and decoder become `reference`'s (`sentencepiece_backend` of `model_file`), in
    place, so the added tokens, the BOS post-processor and transformers' own bookkeeping stay; its added tokens
    match the raw text."""
    from tokenizers import AddedToken

    backend = tok.backend_tokenizer
    if reference.get_vocab_size(with_added_tokens=False) != backend.get_vocab_size(with_added_tokens=False):
        raise CheckpointError(f"{model_file}: {reference.get_vocab_size(with_added_tokens=False)} pieces, but the "
                              f"tokenizer folder's vocabulary has {backend.get_vocab_size(with_added_tokens=False)}")
    backend.model = reference.model
    backend.normalizer = reference.normalizer
    backend.pre_tokenizer = None
    backend.decoder = reference.decoder
    added = backend.get_added_tokens_decoder()
    backend.add_tokens([AddedToken(t.content, normalized=False, special=t.special, lstrip=t.lstrip, rstrip=t.rstrip,
                                   single_word=t.single_word) for _, t in sorted(added.items()) if t.normalized])


def task_token_ids(tok) -> TaskTokenIds:
    ids = tok.convert_tokens_to_ids(list(TASK_TOKENS))
    base = len(tok) - len(TASK_TOKENS)
    if ids != list(range(base, base + len(TASK_TOKENS))):
        raise CheckpointError(
            f"tokenizer: task tokens {list(TASK_TOKENS)} must have ids {base}..{base + 6}, got {ids}"
        )
    return TaskTokenIds(*ids, bos=tok.bos_token_id, eos=tok.eos_token_id, video_placeholder=0)


# ---- the tiny tokenizer -------------------------------------------------------------------------



def tiny_corpus() -> list[str]:
    """Sentences the tiny model sees: prompt scaffolding, the synthetic queries and their answers."""
    lines = ["[INST] <Video>", "</Video>[/INST]", " [INST] ", " [/INST] ", "<Image>", "</Image>"]
    for c in COLOURS:
        for s in SHAPES:
            lines += [
                f"track the {c} {s}", f"where is the {c} {s}?", f"when does the {c} {s} appear?",
                f"The {c} {s} is here.", f"The {c} {s} appears from 1.5 to 4.0 seconds.",
                f"what colour is the {s}?", f"It is {c}.", f"{c}", f"{s}", f"the {s} is {c}",
                f"Tracking the {c} {s}.", f"Locate the {c} {s} in the frame.",
            ]
    for w in NUMBER_WORDS:
        lines += [f"There are {w} shapes.", f"{w}", "how many shapes are there?"]
    lines += [f"{i}" for i in range(100)] + [f"{i}.{j}" for i in range(13) for j in range(10)]
    lines += [
        "Describe the video.", "What happens in the video?", "Yes.", "No.", "I cannot see that.",
        "The video shows moving shapes on a dark background.", "Answer the question.",
        "There is nothing to track.", "object", "objects", "frame", "seconds", "video", "image",
    ]
    return lines


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512) -> Path:
    """Train the tiny SentencePiece model on `tiny_corpus()` and write a loadable tokenizer folder.

    BPE with byte fallback (so any text encodes), `<unk>`=0, `<s>`=1, `</s>`=2 as Mistral; then the
    task tokens are added after the pieces, as the release adds them. The pieces are learnt on the corpus
    with SentencePiece's default whitespace clean-up, then the model keeps whitespace when it encodes, as
    Mistral's does (`remove_extra_whitespaces` off): " [INST] ..." starts with the lone '▁' piece in both.
    """
    import io

    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus() * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1,
        split_digits=True,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    proto.normalizer_spec.remove_extra_whitespaces = False      # Mistral's normalisation
    data = proto.SerializeToString()
    (out / "tokenizer.model").write_bytes(data)
    n = len(spm.SentencePieceProcessor(model_proto=data))
    _write_tokenizer_files(out, n)
    task_token_ids(load_tokenizer(out))
    return out


def _write_tokenizer_files(out: Path, num_pieces: int) -> None:
    """The same files, with the same fields, as the released tokenizer folder."""
    special = {0: "<unk>", 1: "<s>", 2: "</s>"}
    decoder = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, t in special.items()
    }
    for i, t in enumerate(TASK_TOKENS):
        decoder[str(num_pieces + i)] = {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                                        "single_word": False, "special": False}
    config = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "clean_up_tokenization_spaces": False, "legacy": True, "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer", "model_max_length": 4096,
    }
    added = {t: num_pieces + i for i, t in enumerate(TASK_TOKENS)}
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    for name, data in (("tokenizer_config.json", config), ("added_tokens.json", added),
                       ("special_tokens_map.json", specials)):
        (out / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tpo.model.tokenizer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-tiny", help="train the tiny tokenizer and write it to a folder")
    b.add_argument("--out", default=str(ASSET_DIR / "tiny"))
    b.add_argument("--vocab-size", type=int, default=512)
    args = p.parse_args(argv)
    out = build_tiny_tokenizer(args.out, args.vocab_size)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
