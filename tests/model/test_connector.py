import torch

from tpo.model.config import ConnectorConfig
from tpo.model.connector import Connector, from_release, to_release

TINY = ConnectorConfig(width=32, num_layers=3, num_heads=4, intermediate_size=48, num_query_tokens=3,
                       num_extra_query_tokens=5, vocab_size=11, max_position_embeddings=13)


def test_names_round_trip_and_use_bert_layout():
    c = Connector(TINY, vision_width=24, llm_width=40)
    sd = c.state_dict()
    rel = to_release(sd)
    assert from_release(rel).keys() == sd.keys()
    assert "qformer.bert.embeddings.LayerNorm.weight" in rel
    assert "qformer.bert.encoder.layer.0.attention.self.query.weight" in rel
    assert "qformer.bert.encoder.layer.0.crossattention.self.key.weight" in rel
    assert "qformer.bert.encoder.layer.1.crossattention.self.key.weight" not in rel   # layers 0, 2, ...
    assert "qformer.bert.encoder.layer.2.crossattention.self.key.weight" in rel
    assert rel["qformer.bert.embeddings.position_ids"].dtype == torch.int64
    assert tuple(rel["qformer.bert.encoder.layer.0.crossattention.self.key.weight"].shape) == (32, 24)


def test_forward_shape_and_batch_independence():
    torch.manual_seed(0)
    c = Connector(TINY, vision_width=24, llm_width=40).eval()
    v = torch.randn(2, 17, 24)
    out = c(v)
    assert out.shape == (2, 8, 40)
    assert torch.allclose(c(v[1:]), out[1:], atol=1e-5)


def test_query_embeddings_get_the_layernorm_and_no_position_embedding():
    torch.manual_seed(0)
    c = Connector(TINY, vision_width=24, llm_width=40).eval()
    v = torch.randn(1, 17, 24)
    before = c(v)
    with torch.no_grad():
        c.text_embeddings.position_embeddings.weight.add_(1.0)   # unused: no effect
    assert torch.equal(c(v), before)
    with torch.no_grad():
        c.qformer.layernorm.bias.add_(1.0)                        # the embedding LayerNorm: an effect
    assert not torch.allclose(c(v), before)
