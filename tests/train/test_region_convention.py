"""The region box has one convention from data to score: the training target is the query's pixel box
[x1, y1, x2, y2] divided by the frame's (W, H, W, H); the head's output in that convention comes back
from `generate.run_head` as the same pixel box, which is what `evaluate` compares with the query's box.
(Checked while diagnosing region Acc@0.5 = 0 of the first shipped checkpoint: the conventions agree; that
model predicted one constant box for every image.)"""

import numpy as np
import torch

from tpo.data.synthetic import SceneConfig, make_clip
from tpo.model.config import load_config
from tpo.model.generate import GenerationResult, run_head
from tpo.model.preprocess import Video
from tpo.model.tokenizer import load_tokenizer
from tpo.model.tpo_model import build_model
from tpo.train.samples import clip_samples


def test_training_target_head_output_and_scored_box_agree():
    cfg = load_config("tiny")
    tok = load_tokenizer(cfg.tokenizer)
    clip = make_clip(0, 11, SceneConfig(width=160, height=96, duration_range_s=(4.0, 4.0), fps_range=(8, 8)))
    query = next(q for q in clip.queries if q.task == "region")
    sample = next(s for s in clip_samples(clip, cfg, tok) if s.task == "region")
    w, h = clip.spec.width, clip.spec.height
    assert np.allclose(sample.box.numpy() * [w, h, w, h], query.box)
    assert sample.frames.shape == (1, cfg.vision.image_size, cfg.vision.image_size, 3)   # the asked frame only

    torch.manual_seed(0)
    model = build_model(cfg)
    last = model.loc_decoder[-1]
    with torch.no_grad():               # a head that outputs exactly the training target
        last.weight.zero_()
        last.bias.copy_(sample.box)
    result = GenerationResult(text="", raw_text="", task="region", token_ids=[])
    frame = clip.frames[query.frame:query.frame + 1]
    run_head(model, tok, "region", torch.randn(cfg.llm.hidden_size), Video(frame, clip.fps), query.question,
             result, None)
    assert np.allclose(result.region[0].box_xyxy, query.box, atol=1e-3)
    assert np.allclose(result.region[0].box_normalised, sample.box.numpy())
