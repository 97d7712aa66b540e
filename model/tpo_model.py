"""VideoChat-TPO: video ViT -> Q-Former -> Mistral (LoRA) -> task tokens -> task heads.

Attribute names are the release's top-level names (`vision_encoder`, `vision_layernorm`, `lm`,
`box_token`, `loc_decoder`, `track_embed`, `sam`, `cg_model`, ...), so most tensors load by a plain
copy; the connector (transformers' Q-Former, connector.py) and the mask head (transformers' SAM2,
release_names.py) convert their names. `release_state_dict()` / `release_to_ours()` go through those.

The forward pieces are small on purpose, one per exported graph: `encode_visual`, `embed_prompt`,
`llm_step`, the heads. Decoding and routing live in `generate.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from tpo.contract import tasks

from . import connector as connector_names
from . import temporal_head as temporal_head_names
from .config import TPOConfig
from .connector import Connector
from .llm import build_llm
from .mask_head import MaskHead
from .prompt import Prompt
from .release_names import StateDict, add_prefix, sam2_from_release, sam2_to_release, take_prefix
from .task_adapters import MLP, box_encoder, region_head
from .temporal_criterion import TemporalCriterion
from .temporal_head import TemporalHead
from .vision_encoder import VisionEncoder

CONNECTOR_PREFIX = "connector."
# release prefix -> (our module prefix, to_release, from_release) for components that rename
RENAMED = {
    "sam.": ("sam.", sam2_to_release, sam2_from_release),
    "cg_model.": ("cg_model.", temporal_head_names.to_release, temporal_head_names.from_release),
}


class TPOModel(nn.Module):
    def __init__(self, cfg: TPOConfig):
        super().__init__()
        self.cfg = cfg
        h, q = cfg.llm.hidden_size, cfg.connector.width
        self.vision_encoder = VisionEncoder(cfg.vision)
        self.vision_layernorm = nn.LayerNorm(cfg.vision.width, eps=cfg.vision.final_norm_eps)
        self.connector = Connector(cfg.connector, cfg.vision.width, h)
        self.lm = build_llm(cfg.llm)
        # task embeddings (tpo.contract.tasks: Task.embedding): fed to the LLM in place of <boxes>, <temp>, <tracking>
        self.box_token = nn.Parameter(torch.randn(1, 1, h))
        self.temporal_token = nn.Parameter(torch.randn(1, 1, h))
        self.track_token = nn.Parameter(torch.randn(1, 1, h))
        # task adapters
        self.loc_encoder = box_encoder(h, cfg.box_hidden)
        self.loc_decoder = region_head(h, cfg.box_hidden)
        self.track_embed = MLP(h, h, cfg.track_prompt_dim, 2)
        self.track_embed_decode2 = MLP(h, h, 4, 2)   # box from the track hidden state (a training loss)
        # heads
        self.sam = MaskHead(cfg.mask_head)
        self.cg_model = TemporalHead(cfg.temporal_head)
        self.cg_criterion = TemporalCriterion()
        # stored by the release but unused at inference (kept so every tensor has a home)
        self.temporal_embed = MLP(h, h, 2, 2, dropout=0.3)
        self.action_embed = MLP(h, h, 1, 2, dropout=0.3)
        self.merge_proj = nn.Linear(q * 4, h)
        self.project_down = nn.Linear(h, q)

    # ---- properties --------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.box_token.dtype

    @property
    def device(self) -> torch.device:
        return self.box_token.device

    # ---- the visual path ---------------------------------------------------------------------
    def encode_visual(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, T, S, S] normalised -> visual tokens in LLM space [B, Q, H] (Q = 96)."""
        tokens = self.vision_layernorm(self.vision_encoder(pixels))   # (B, T*g*g, Dv)
        return self.connector(tokens)                                 # (B, Q, H)

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, T, S, S] -> [N, Dv]: mean-pooled normalised vision tokens (tiny's temporal features)."""
        return self.vision_layernorm(self.vision_encoder(pixels)).mean(dim=1)

    # ---- the language path -------------------------------------------------------------------
    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] -> the LLM's input embeddings [B, L, H]."""
        return self.lm.get_input_embeddings()(ids.to(self.device))

    def task_embedding(self, task: str) -> torch.Tensor:
        """[1, 1, H]: the learned embedding fed for a task's placeholder token (the parameter the task
        registry names: `Task.embedding`, e.g. `box_token`)."""
        return getattr(self, tasks.task(task).embedding)

    def embed_prompt(
        self,
        prompt: Prompt,
        visual: torch.Tensor,
        placeholder_ids: dict[str, int],
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The splice: prompt ids -> inputs_embeds [1, L, H].

        visual [1, Q, H] replaces the video slots; each task placeholder id gets its task embedding;
        each `<track_box>` gets `loc_encoder(box)` for boxes [K, 4] (normalised x1,y1,x2,y2), in order.
        """
        ids = prompt.input_ids.to(self.device)
        x = self.token_embeddings(ids[None])[0].clone()                       # (L, H)
        x[prompt.visual_mask.to(self.device)] = visual[0].to(x.dtype)
        for task, pid in placeholder_ids.items():
            x[ids == pid] = self.task_embedding(task)[0, 0].to(x.dtype)
        n_slots = int(prompt.track_box_positions.numel())
        if n_slots:
            if boxes is None or boxes.shape[0] != n_slots:
                got = 0 if boxes is None else boxes.shape[0]
                raise ValueError(f"prompt has {n_slots} {tasks.TRACK_BOX} token(s) but {got} box(es) were given")
            x[prompt.track_box_positions.to(self.device)] = self.loc_encoder(boxes.to(x)).to(x.dtype)
        return x[None]

    def llm_step(self, inputs_embeds: torch.Tensor, past=None):
        """inputs_embeds [1, L, H] (+ cache) -> (logits [1, L, V], final-norm hidden [1, L, H], cache)."""
        out = self.lm(inputs_embeds=inputs_embeds, cache=past, use_cache=True, output_hidden_states=True)
        return out.logits, out.hidden_states[-1], out.cache

    # ---- the heads' prompts (the task router's outputs) -----------------------------------
    def region_box(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [.., H] -> box [.., 4], normalised x1,y1,x2,y2."""
        return self.loc_decoder(hidden)

    def track_prompt(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, H] -> SAM2 sparse prompt [B, 3, C] (C = mask head width, 256 released)."""
        c = self.cfg.mask_head.hidden_size
        return self.track_embed(hidden).reshape(hidden.shape[0], self.cfg.adapters.track_prompt_tokens, c)

    # ---- the release layout ------------------------------------------------------------------
    def release_state_dict(self) -> StateDict:
        """Our state dict under the release's names (meta tensors work: shapes only)."""
        sd = self.state_dict()
        out: StateDict = {}
        claimed = set()
        for rel_prefix, (our_prefix, to_release, _) in RENAMED.items():
            part = take_prefix(sd, our_prefix)
            claimed |= {our_prefix + k for k in part}
            out.update(add_prefix(to_release(part), rel_prefix))
        conn = take_prefix(sd, CONNECTOR_PREFIX)
        claimed |= {CONNECTOR_PREFIX + k for k in conn}
        out.update(connector_names.to_release(conn))
        out.update({k: v for k, v in sd.items() if k not in claimed})
        return out

    @staticmethod
    def release_to_ours(release: StateDict) -> StateDict:
        """Release names -> our state-dict names (the inverse of `release_state_dict`)."""
        out: StateDict = {}
        claimed = set()
        for rel_prefix, (our_prefix, _, from_release) in RENAMED.items():
            part = take_prefix(release, rel_prefix)
            claimed |= {rel_prefix + k for k in part}
            out.update(add_prefix(from_release(part), our_prefix))
        conn = {k: v for k, v in release.items() if k not in claimed and k.startswith(connector_names.RELEASE_PREFIXES)}
        claimed |= set(conn)
        out.update(add_prefix(connector_names.from_release(conn), CONNECTOR_PREFIX))
        out.update({k: v for k, v in release.items() if k not in claimed})
        return out


def build_model(cfg: TPOConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TPOModel:
    """A model with freshly initialised weights; `device="meta"` allocates nothing (for loading)."""
    with torch.device(device):
        model = TPOModel(cfg)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval()
