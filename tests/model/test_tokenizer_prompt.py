from pathlib import Path

import pytest
import torch

from tpo.contract.tasks import TASK_TOKENS
from tpo.errors import CheckpointError, InputError
from tpo.model.prompt import build_prompt
from tpo.model.tokenizer import build_tiny_tokenizer, load_tokenizer, task_token_ids


@pytest.fixture(scope="module")
def released(reference_dir):
    return load_tokenizer(reference_dir)


@pytest.fixture(scope="module")
def tiny():
    return load_tokenizer("tiny")


def test_released_tokenizer_loads_offline_with_task_tokens_at_32000(released):
    ids = task_token_ids(released)
    assert len(released) == 32007
    assert [ids.box_begin, ids.time_begin, ids.temp, ids.boxes, ids.track_begin, ids.tracking, ids.track_box] == \
        list(range(32000, 32007))
    assert released.convert_tokens_to_ids(list(TASK_TOKENS)) == list(range(32000, 32007))


def test_released_tokenizer_encodes_the_template_with_task_tokens(released):
    text = " [INST] track the dog [/INST] <track_begin><tracking></s>"
    ids = released(text, add_special_tokens=False).input_ids
    assert ids[-3:-1] == [32004, 32005]
    p = build_prompt(released, "where is the dog? <box_begin><boxes>", num_visual_tokens=96)
    assert 32000 in p.input_ids.tolist() and 32003 in p.input_ids.tolist()


@pytest.mark.parametrize("which", ["released", "tiny"])
def test_prompt_has_96_visual_slots_and_one_bos_per_chunk(which, request):
    tok = request.getfixturevalue(which)
    p = build_prompt(tok, "track the red circle", num_visual_tokens=96)
    ids = p.input_ids.tolist()
    assert int(p.visual_mask.sum()) == 96 and all(ids[i] == 0 for i in range(len(ids)) if p.visual_mask[i])
    # the release's quirk, reproduced: BOS at the start of each of the 3 text chunks
    assert ids.count(1) == 3 and ids[0] == 1
    first_visual = int(p.visual_mask.nonzero()[0])
    assert ids[first_visual + 96] == 1                # "</Video>..." chunk starts with BOS
    decoded = tok.decode([i for i, v in zip(ids, p.visual_mask, strict=True) if not v], skip_special_tokens=True)
    assert "[INST] <Video>" in decoded and "</Video>[/INST]" in decoded and "track the red circle [/INST]" in decoded
    single = build_prompt(tok, "track the red circle", num_visual_tokens=96, one_bos=True).input_ids.tolist()
    assert single.count(1) == 1 and len(single) == len(ids) - 2


def test_track_box_positions_and_limits(tiny):
    p = build_prompt(tiny, "track this <track_box> please", num_visual_tokens=8)
    assert p.input_ids[p.track_box_positions].tolist() == [task_token_ids(tiny).track_box]
    with pytest.raises(InputError, match="empty"):
        build_prompt(tiny, "   ", num_visual_tokens=8)
    with pytest.raises(InputError, match="over the limit of 64"):
        build_prompt(tiny, "red " * 100, num_visual_tokens=8, max_tokens=64)


def test_tiny_tokenizer_is_rebuilt_identically(tmp_path, tiny):
    out = build_tiny_tokenizer(tmp_path / "tok")
    rebuilt = load_tokenizer(out)
    text = "[INST] <Video></Video>[/INST] [INST] when does the blue triangle appear? [/INST] <time_begin><temp>"
    assert rebuilt(text).input_ids == tiny(text).input_ids
    assert len(rebuilt) == len(tiny)
    shipped = Path(tiny.vocab_file).read_bytes()
    assert (out / "tokenizer.model").read_bytes() == shipped


def test_tiny_tokenizer_round_trips_answers(tiny):
    for s in ("The red square is here.", "There are three shapes.", "It is yellow.", "2.5 to 7.0 seconds"):
        assert tiny.decode(tiny(s, add_special_tokens=False).input_ids) == s
    assert isinstance(torch.tensor(tiny("x").input_ids), torch.Tensor)


def test_a_sentencepiece_model_whose_normalisation_cannot_be_reproduced_is_refused(tmp_path):
    """E.g. the tiny model as first trained (whitespace clean-up on): refused, not tokenised differently."""
    import shutil

    from sentencepiece import sentencepiece_model_pb2

    folder = tmp_path / "tok"
    shutil.copytree(Path(load_tokenizer("tiny").vocab_file).parent, folder)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    proto.normalizer_spec.remove_extra_whitespaces = True
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    with pytest.raises(CheckpointError, match="remove_extra_whitespaces"):
        load_tokenizer(folder)
    (folder / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        load_tokenizer(folder)
