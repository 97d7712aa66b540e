"""The TPO training recipe at tiny scale: stage 0 (mask head), 1 (task assignment), 2 (heads and task
embeddings), 3 (joint co-training with conversation data).

Deviation from the release, forced by scale: the release starts from a pretrained Mistral and trains
LoRA only; no pretrained tiny LLM exists, so stages 1 and 3 also train the LLM's base weights (and
the vision encoder and connector, which the release also trains). The mask head is pretrained here
(stage 0) and then frozen, as the release freezes SAM2.

Everything is deterministic for a seed: the batch of step k of stage s is drawn from a generator
seeded with (seed, s, k), and torch's generator is reseeded the same way, so a resumed run takes
exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tpo.contract.tasks import TASKS
from tpo.data.synthetic import SceneConfig
from tpo.errors import ConfigError
from tpo.model.config import load_config
from tpo.model.prompt import Prompt
from tpo.model.tokenizer import load_tokenizer, resolve_tokenizer_dir
from tpo.model.tpo_model import TPOModel, build_model

from .heads import TRAIN_HEADS, train_head
from .recipe_config import HEADS, STAGES, RecipeConfig  # noqa: F401  (re-exported)
from .sample import Sample, frames_to_pixels
from .samples import build_pool
from .slot_attention import SlotMap, slot_attention_layer, slot_attention_loss

# Stage 0's mask head steps on single images before the video windows (pretrain_mask_head's own split,
# 150 of 250). A fraction, so that every step count trains the memory path too: with a fixed 150 image
# steps, a 150-step stage 0 never saw a video window and the tracker's memory stayed untrained.
STAGE0_IMAGE_FRAC = 0.6


@dataclass
class TrainState:
    stage: int = 1
    step: int = 0
    done_stages: list[int] = field(default_factory=list)
    stage0_parts: list[str] = field(default_factory=list)   # "mask", "vision", "connector": stage 0's finished parts


# ---- what each stage trains -------------------------------------------------------------------------

def trainable_parameters(model: TPOModel, stage: int, freeze_vision: bool = False,
                         freeze_connector: bool = False) -> list[torch.nn.Parameter]:
    """Stage 1: vision, connector, LLM and task embeddings on the LM loss. Stage 2: every registered head
    (`TrainHead.parameters`) and the task embeddings. Stage 3: everything but the frozen mask head.
    freeze_vision: also leave the vision encoder (and vision_layernorm) out of stages 1 and 3;
    freeze_connector: the connector likewise."""
    embeddings = tuple(t.embedding for t in TASKS.values())
    names = {
        1: ("vision_encoder.", "vision_layernorm.", "connector.", "lm.", *embeddings),
        2: (*(p for h in TRAIN_HEADS.values() for p in h.parameters), *embeddings),
    }
    params = []
    for name, p in model.named_parameters():
        if name.startswith("sam.") or (freeze_vision and name.startswith(("vision_encoder.", "vision_layernorm."))) \
                or (freeze_connector and name.startswith("connector.")):
            wanted = False
        elif stage == 3:
            wanted = not name.startswith(("loc_encoder.", "temporal_embed.", "action_embed.", "merge_proj.",
                                          "project_down."))
        else:
            wanted = name.startswith(names[stage])
        p.requires_grad_(wanted)
        if wanted:
            params.append(p)
    return params


def stage0_image_steps(steps: int) -> int:
    """Stage 0's single-image steps out of `steps` (the rest are video windows through the memory path)."""
    return min(steps - 1, round(STAGE0_IMAGE_FRAC * steps)) if steps > 1 else steps


def lr_at(step: int, total: int, rc: RecipeConfig) -> float:
    warm = max(1, int(rc.warmup_frac * total))
    if step < warm:
        return rc.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return rc.lr * (rc.min_lr_frac + (1 - rc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- one step ----------------------------------------------------------------------------------------

def batch_losses(model: TPOModel, batch: list[Sample], rc: RecipeConfig, stage: int,
                 rng: torch.Generator, visual_cache: dict | None = None) -> dict[str, torch.Tensor]:
    """LM loss on every sample (stages 1, 3) and each head's loss on its samples (stages 2, 3), in
    `rc.heads` order; with rc.slot_attention, stage 3 adds the slot attention loss (the LLM must then run with
    eager attention: `run_stage` sets it). visual_cache: see `_batch_visual`."""
    x, mask, labels = _batch_embeddings(model, batch, visual_cache)
    slots = rc.slot_attention_at(stage)
    out = model.lm(inputs_embeds=x, attention_mask=mask, output_hidden_states=True, output_attentions=slots,
                   use_cache=False)
    losses: dict[str, torch.Tensor] = {}
    if stage in (1, 3):
        logits = out.logits[:, :-1].float()
        losses["lm"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                       ignore_index=-100)
    if stage in (2, 3):
        hidden = out.hidden_states[-1]
        for task in rc.heads:
            rows = [i for i, s in enumerate(batch) if s.route == task]
            if rows:
                hs = torch.stack([hidden[i, batch[i].placeholder] for i in rows])          # (n, H)
                losses[task] = train_head(task).loss(model, hs, [batch[i] for i in rows], rc, rng)
    if slots:
        attention = out.attentions[slot_attention_layer(model.cfg)]
        loss = slot_attention_loss(attention, batch, SlotMap.of(model.cfg, rc.connector_layout))
        if loss is not None:
            losses["slot_attention"] = rc.slot_attention * loss
    return losses


def _batch_visual(model: TPOModel, batch: list[Sample], cache: dict | None = None) -> list[torch.Tensor]:
    """Each sample's visual tokens [1, Q, H]; queries of one clip share its frames, so each distinct frame
    stack is encoded once (videos first, then images, in one batch per media). cache (a dict kept by the
    caller while neither the vision encoder nor the connector trains): each frame stack is encoded once per
    stage, without gradients and in eval mode (no Q-Former dropout: a frozen part is run as at inference)."""
    visual: list = [None] * len(batch)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(batch):
        groups.setdefault(id(s.frames), []).append(i)
    for media in ("video", "image"):
        keys = [k for k, idx in groups.items() if batch[idx[0]].media == media and (cache is None or k not in cache)]
        if keys:
            pixels = torch.stack([frames_to_pixels(batch[groups[k][0]].frames, model.cfg) for k in keys])
            out = model.encode_visual(pixels) if cache is None else _encode_frozen(model, pixels)   # (n, Q, H)
            for j, k in enumerate(keys):
                if cache is not None:
                    cache[k] = out[j: j + 1]
                for i in groups[k]:
                    visual[i] = out[j: j + 1]
    if cache is not None:
        for k, idx in groups.items():
            for i in idx:
                visual[i] = cache[k]
    return visual


@torch.no_grad()
def _encode_frozen(model: TPOModel, pixels: torch.Tensor) -> torch.Tensor:
    parts = (model.vision_encoder, model.vision_layernorm, model.connector)
    modes = [m.training for m in parts]
    for m in parts:
        m.eval()
    try:
        return model.encode_visual(pixels)
    finally:
        for m, mode in zip(parts, modes, strict=True):
            m.train(mode)


def visual_parts_frozen(model: TPOModel) -> bool:
    """Neither the vision encoder (with vision_layernorm) nor the connector trains in this stage."""
    parts = (model.vision_encoder, model.vision_layernorm, model.connector)
    return not any(p.requires_grad for m in parts for p in m.parameters())


def _batch_embeddings(model: TPOModel, batch: list[Sample],
                      visual_cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch right-padded: inputs_embeds [B, L, H] (task embeddings at the placeholders), attention
    mask [B, L] and labels [B, L] (-100 on padding)."""
    embeds = []
    for s, v in zip(batch, _batch_visual(model, batch, visual_cache), strict=True):
        prompt = Prompt(s.input_ids, s.visual_mask, torch.zeros(0, dtype=torch.long))
        placeholders = {s.route: int(s.input_ids[s.placeholder])} if s.placeholder >= 0 else {}
        embeds.append(model.embed_prompt(prompt, v, placeholders)[0])
    b, lmax, h = len(batch), max(e.shape[0] for e in embeds), embeds[0].shape[1]
    x = embeds[0].new_zeros(b, lmax, h)
    mask = torch.zeros(b, lmax, dtype=torch.long)
    labels = torch.full((b, lmax), -100, dtype=torch.long)
    for i, (e, s) in enumerate(zip(embeds, batch, strict=True)):
        x[i, : e.shape[0]], mask[i, : e.shape[0]], labels[i, : e.shape[0]] = e, 1, s.labels
    return x, mask, labels


# ---- checkpoints -------------------------------------------------------------------------------------

def save_state(out: Path, model: TPOModel, optimizer: torch.optim.Optimizer | None, state: TrainState,
               rc: RecipeConfig) -> None:
    """out/state: weights (safetensors, release names), optimizer (tensors only), position; atomic."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".state.", dir=out))
    weights = {k: v.detach().contiguous() for k, v in model.release_state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"train": dataclasses.asdict(state),
                                                "recipe": dataclasses.asdict(rc)}, indent=2))
    final = out / "state"
    old = out / ".state.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_state(out: Path, model: TPOModel, rc: RecipeConfig) -> tuple[TrainState, dict | None]:
    saved = json.loads((out / "state" / "state.json").read_text())
    mine = json.loads(json.dumps(dataclasses.asdict(rc)))
    # a setting newer than the saved run takes its default there (a new setting's default keeps the old behaviour)
    defaults = json.loads(json.dumps(dataclasses.asdict(RecipeConfig())))
    theirs = {k: v for k, v in {**defaults, **saved["recipe"]}.items() if k != "stages"}
    if {k: v for k, v in mine.items() if k != "stages"} != theirs:
        diff = sorted(k for k in theirs if theirs[k] != mine.get(k))
        raise ConfigError(f"{out}: holds a run with other settings ({diff}); use another --out to start afresh")
    weights = load_file(str(out / "state" / "model.safetensors"))
    model.load_state_dict(TPOModel.release_to_ours(weights), strict=True)
    opt_path = out / "state" / "optimizer.pt"
    opt = torch.load(opt_path, weights_only=True) if opt_path.exists() else None
    return TrainState(**saved["train"]), opt


# ---- the loop ----------------------------------------------------------------------------------------

def run_stage(model: TPOModel, pool: list[Sample], rc: RecipeConfig, stage: int, state: TrainState,
              out: Path, log: Callable[[dict], None], opt_state: dict | None, progress: bool) -> None:
    total = rc.steps(stage)
    params = trainable_parameters(model, stage, rc.freeze_vision, rc.freeze_connector)
    visual_cache: dict | None = {} if visual_parts_frozen(model) else None
    optimizer = torch.optim.AdamW(params, lr=rc.lr, weight_decay=rc.weight_decay)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    def wanted(s: Sample) -> bool:
        if stage == 2:   # heads and task embeddings: visual-task data only
            return s.route in rc.heads
        return s.route == "none" or s.route in rc.heads

    by_clip: dict[str, list[int]] = {}
    for i, s in enumerate(pool):
        if wanted(s):
            by_clip.setdefault(s.clip, []).append(i)
    clips = sorted(by_clip)
    per_clip = max(len(v) for v in by_clip.values())
    n_clips = max(1, rc.batch_size // per_clip)
    model.train()
    model.sam.eval()
    with eager_attention(model, rc.slot_attention_at(stage)):   # sdpa returns no attention weights
        bar = tqdm(total=total, initial=state.step, desc=f"stage {stage}", disable=not progress)
        while state.step < total:
            t0 = time.time()
            gen = np.random.default_rng([rc.seed, stage, state.step])
            torch.manual_seed(int(gen.integers(2**31)))
            chosen = gen.choice(len(clips), size=min(n_clips, len(clips)), replace=False)
            batch = [pool[i] for c in chosen for i in by_clip[clips[c]]]
            lr = lr_at(state.step, total, rc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = batch_losses(model, batch, rc, stage, torch.Generator().manual_seed(int(gen.integers(2**31))),
                                  visual_cache)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, rc.grad_clip)
            optimizer.step()
            state.step += 1
            record = {"stage": stage, "step": state.step, "lr": lr, "loss": float(loss.detach()), "grad_norm": float(norm),
                      "seconds": round(time.time() - t0, 3), **{k: float(v.detach()) for k, v in losses.items()}}
            log(record)
            bar.update(1)
            bar.set_postfix({k: f"{float(v.detach()):.3f}" for k, v in losses.items()})
            if state.step % rc.checkpoint_every == 0 and state.step < total:
                save_state(out, model, optimizer, state, rc)
        bar.close()
    model.eval()


@contextmanager
def eager_attention(model: TPOModel, wanted: bool) -> Iterator[None]:
    """The LLM on eager attention inside the block when `wanted` (it returns attention weights), then back."""
    before = model.lm.config._attn_implementation
    if wanted:
        model.lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.lm.set_attn_implementation(before)


def train(rc: RecipeConfig, out: str | Path, progress: bool = True, log_echo: Callable[[dict], None] | None = None):
    """Run the recipe into `out` (resuming from out/state if present); returns the trained model."""
    from .connector_pretrain import pretrain_connector
    from .mask_pretrain import pretrain_mask_head
    from .vision_pretrain import pretrain_vision_encoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("TPO_THREADS", min(2, os.cpu_count() or 1))))
    cfg = load_config(rc.config)
    tok = load_tokenizer(cfg.tokenizer)
    torch.manual_seed(rc.seed)
    model = build_model(cfg)
    state, opt_state = TrainState(), None
    if (out / "state" / "state.json").is_file():
        state, opt_state = load_state(out, model, rc)
    log_file = open(out / "log.jsonl", "a")   # noqa: SIM115 (closed below; written every step)

    def log(record: dict) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if log_echo is not None:
            log_echo(record)

    try:
        if 0 in rc.stages and 0 not in state.done_stages:
            t0 = time.time()
            state.stage, state.step = 0, 0
            if rc.stage0_steps and "mask" not in state.stage0_parts:     # each part is saved when done: a resumed run skips it
                metrics = pretrain_mask_head(model.sam, steps=rc.stage0_steps, seed=rc.seed,
                                             image_steps=stage0_image_steps(rc.stage0_steps),
                                             log=lambda r: log({"stage": 0, **r}), progress=progress)
                log({"stage": 0, "part": "mask", "done": True, "seconds": round(time.time() - t0, 1), **metrics})
                state.stage0_parts.append("mask")
                save_state(out, model, None, state, rc)
            if rc.vision_steps and "vision" not in state.stage0_parts:
                t1 = time.time()
                vision = pretrain_vision_encoder(model, steps=rc.vision_steps, seed=rc.seed,
                                                 category_weight=rc.vision_category_weight, lr=rc.vision_lr,
                                                 pool_clips=rc.vision_pool_clips,
                                                 log=lambda r: log({"stage": 0, "part": "vision", **r}),
                                                 progress=progress)
                log({"stage": 0, "part": "vision", "done": True, "seconds": round(time.time() - t1, 1), **vision})
                state.stage0_parts.append("vision")
                save_state(out, model, None, state, rc)
            if rc.connector_steps and "connector" not in state.stage0_parts:
                t1 = time.time()
                connector, _ = pretrain_connector(model, steps=rc.connector_steps, seed=rc.seed,
                                                  attention=rc.connector_attention, layout=rc.connector_layout,
                                                  log=lambda r: log({"stage": 0, "part": "connector", **r}),
                                                  progress=progress)
                log({"stage": 0, "part": "connector", "done": True, "seconds": round(time.time() - t1, 1),
                     **connector})
                state.stage0_parts.append("connector")
            log({"stage": 0, "done": True, "seconds": round(time.time() - t0, 1)})
            state.done_stages.append(0)
            state.stage, state.step = 1, 0
            save_state(out, model, None, state, rc)
            opt_state = None
        later = [s for s in (1, 2, 3) if s in rc.stages and s not in state.done_stages]
        scene = SceneConfig(queries_per_task=rc.queries_per_task)
        pool = build_pool(cfg, tok, rc.train_clips, rc.seed, scene=scene, progress=progress) if later else []
        for stage in later:
            if state.stage != stage:
                state.stage, state.step, opt_state = stage, 0, None
            t0 = time.time()
            run_stage(model, pool, rc, stage, state, out, log, opt_state, progress)
            opt_state = None
            state.done_stages.append(stage)
            log({"stage": stage, "done": True, "seconds": round(time.time() - t0, 1)})
            save_state(out, model, None, state, rc)
    finally:
        log_file.close()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tok




def finish(model: TPOModel, tok, out: str | Path, rc: RecipeConfig, eval_clips: int = 0,
           progress: bool = False) -> Path:
    """Write out/checkpoint (fp16, release layout, with the tokenizer); with eval_clips, score it on
    held-out clips (seed + 1000) and write out/metrics.json."""
    from tpo.model.checkpoint import save_checkpoint

    out = Path(out)
    path = save_checkpoint(model, out / "checkpoint", dtype=torch.float16,
                           tokenizer_dir=resolve_tokenizer_dir(model.cfg.tokenizer), overwrite=True)
    if eval_clips:
        from tpo.data.files import Dataset
        from tpo.data.synthetic import make_clip
        from tpo.model.checkpoint import load_checkpoint

        from .evaluate import evaluate

        shipped, _ = load_checkpoint(path, dtype="fp32")
        held_out = Dataset(root=Path(f"synthetic(seed={rc.seed + 1000})"), meta={},
                           clips=[make_clip(i, rc.seed + 1000) for i in range(eval_clips)])
        metrics = evaluate(shipped, tok, held_out, progress=progress)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return path
