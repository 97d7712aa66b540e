import numpy as np
import torch

from tpo.model.config import VisionEncoderConfig
from tpo.model.vision_encoder import VisionEncoder, sinusoid_table, video_position_table

TINY = VisionEncoderConfig(image_size=32, patch_size=8, width=24, depth=3, return_index=-2, num_heads=4,
                           num_frames=8)


def test_sinusoid_table_matches_the_formula():
    t = sinusoid_table(5, 6).double()
    for pos in range(5):
        for j in range(6):
            angle = pos / np.power(10000, 2 * (j // 2) / 6)
            want = np.sin(angle) if j % 2 == 0 else np.cos(angle)
            assert abs(t[pos, j].item() - want) < 1e-6


def test_position_table_is_the_4_frame_table_interpolated_in_time():
    cfg = TINY
    g2 = cfg.grid ** 2
    base = sinusoid_table(4 * g2, cfg.width).reshape(4, g2, cfg.width)
    # 4 frames: the plain table; 1 frame: the plain g*g table
    assert torch.equal(video_position_table(cfg, 4), base.reshape(-1, cfg.width))
    assert torch.equal(video_position_table(cfg, 1), sinusoid_table(g2, cfg.width))
    # 8 frames: linear, align_corners=False -> frame 0 and 1 both equal base frame 0 (clamped edge),
    # frame 2 is 0.25*f0 + 0.75*f1 ... (source coordinate (i + 0.5) / 2 - 0.5)
    t8 = video_position_table(cfg, 8).reshape(8, g2, cfg.width)
    assert torch.allclose(t8[0], base[0])
    assert torch.allclose(t8[2], 0.25 * base[0] + 0.75 * base[1], atol=1e-6)
    assert torch.allclose(t8[7], base[3])


def test_2d_position_table_keeps_time_row_and_column_apart():
    """The "2d" table: a quarter of the channels the frame index, then the row, then the column, so each is a
    linear read-out; the default stays the release's 1-D table."""
    from dataclasses import replace

    from tpo.model.vision_encoder import separable_position_table

    assert TINY.position_table == "1d"
    cfg = replace(TINY, position_table="2d")
    g, c = cfg.grid, cfg.width
    t = video_position_table(cfg, 3).reshape(3, g, g, c)
    assert torch.equal(t, separable_position_table(cfg, 3).reshape(3, g, g, c))
    ct, cs = c // 4, (c - c // 4) // 2
    for f in range(3):
        for r in range(g):
            for col in range(g):
                assert torch.equal(t[f, r, col, :ct], sinusoid_table(3, ct)[f])
                assert torch.equal(t[f, r, col, ct:ct + cs], sinusoid_table(g, cs)[r])
                assert torch.equal(t[f, r, col, ct + cs:], sinusoid_table(g, cs)[col])
    # one frame (an image) is frame 0 of a video
    assert torch.equal(video_position_table(cfg, 1), t[0].reshape(-1, c))
    # the model uses it: the encoder's output changes with the table
    torch.manual_seed(0)
    one, two = VisionEncoder(TINY).eval(), VisionEncoder(cfg).eval()
    two.load_state_dict(one.state_dict())
    x = torch.randn(1, 3, 2, 32, 32)
    assert not torch.allclose(one(x), two(x))


def test_blocks_and_names_follow_the_release():
    enc = VisionEncoder(TINY)
    assert len(enc.encoder.blocks) == TINY.depth + TINY.return_index + 1 == 2
    names = set(enc.state_dict())
    assert "encoder.blocks.0.attn.q_bias" in names and "encoder.blocks.0.attn.v_bias" in names
    assert not any("k_bias" in n or n.startswith("encoder.norm") for n in names)


def test_forward_shape_and_frame_count_and_no_k_bias_effect():
    torch.manual_seed(0)
    enc = VisionEncoder(TINY).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    out = enc(x)
    assert out.shape == (2, 8 * 16, 24)
    assert enc(torch.randn(1, 3, 1, 32, 32)).shape == (1, 16, 24)
    # a k bias would be a constant added to every key: softmax is invariant to it anyway, so check the
    # fused bias really is (q_bias, 0, v_bias)
    attn = enc.encoder.blocks[0].attn
    with torch.no_grad():
        attn.q_bias.fill_(0.5)
        attn.v_bias.fill_(-0.25)
    y = torch.randn(1, 5, 24)
    qkv = torch.nn.functional.linear(y, attn.qkv.weight)
    want_k = qkv[..., 24:48]
    got = torch.nn.functional.linear(y, attn.qkv.weight, torch.cat((attn.q_bias, torch.zeros(24), attn.v_bias)))
    assert torch.allclose(got[..., 24:48], want_k)


def test_wrong_input_shape_names_the_expected_shape():
    enc = VisionEncoder(TINY)
    try:
        enc(torch.randn(1, 3, 8, 30, 30))
    except ValueError as e:
        assert "[B, 3, T, 32, 32]" in str(e)
    else:
        raise AssertionError("expected a ValueError")
