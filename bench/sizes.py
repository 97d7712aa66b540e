"""Part 5 of a run, model sizes: the graphs of tiny (its trained checkpoint: the stages already measured) and of
the small and videochat-tpo configurations (random weights, seed 0), each through PyTorch eager and ONNX Runtime.

The random-weight graphs are written by the exporter without its parity gate (`tpo.export.standalone`,
cached). videochat-tpo does not fit here whole: everything but the LLM comes from a model whose LLM is cut to
one layer, and the LLM alone is measured at 1 layer (full vocabulary: the head's cost) and at 1 and 2 layers
with the vocabulary cut to `PER_LAYER_VOCAB` (a 2-layer graph with the full 32k x 4096 head is over
protobuf's 2 GB; a layer's cost does not depend on the vocabulary); the 32-layer cost is extrapolated.
A graph whose floor predicts calls over `Plan.size_call_cap_s` is skipped with a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tpo.contract import Precision, Tracker
from tpo.contract import graphs as G

from . import floor
from .backends import EngineClock, eager_runner, quiet_onnxruntime, variant_name
from .cache import cache_root
from .goal import GOAL_STAGES
from .inputs import example_feed
from .measure import extrapolate_layers, load_config_layers, sum_counts, torch_threads, tracker_on
from .plan import BASELINE, LLM_STAGES, TRACKED_STEP_GRAPHS
from .stages import CountingRunner
from .tiny_stages import input_shapes

if TYPE_CHECKING:
    from .suite import Suite

BIG = "videochat-tpo"
WEIGHTS = "random, seed 0"
SIZE_GRAPHS = (G.VISION_ENCODER, G.VISION_ENCODER_IMAGE, G.CONNECTOR, G.LLM, G.TASK_ROUTER, G.TEMPORAL_HEAD,
               *G.FAST_PATH)
PER_LAYER_VOCAB = 1024       # videochat-tpo's LLM per-layer cost is measured with the vocabulary cut to this
LAYER_LABELS = {"1": "1 layer", "1v": f"1 layer, vocab {PER_LAYER_VOCAB}", "2v": f"2 layers, vocab {PER_LAYER_VOCAB}"}
LLM_CUTS = {"1": (1, None), "1v": (1, PER_LAYER_VOCAB), "2v": (2, PER_LAYER_VOCAB)}    # key -> (layers, vocab)
TINY_STAGES = (G.VISION_ENCODER.name, G.VISION_ENCODER_IMAGE.name, G.CONNECTOR.name, *LLM_STAGES,
               G.TASK_ROUTER.name, G.TEMPORAL_HEAD.name, *(s.name for s in TRACKED_STEP_GRAPHS), "track_step")


def run_sizes(suite: Suite) -> None:
    out: dict[str, dict] = {}
    for size in suite.plan.sizes:
        try:
            out[size] = size_from_stages(suite) if size == "tiny" else SizeRun(suite, size).measure()
        except Exception as e:          # noqa: BLE001  (best effort per size: the rest of the report stands)
            suite.note(f"model size {size}: not measured ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
        suite.memory(f"size {size}")
    suite.result["sizes"] = out


def size_from_stages(suite: Suite) -> dict:
    stages = [e for e in suite.result.get("stages", []) if e["stage"] in TINY_STAGES]
    return {"weights": "embedded trained checkpoint", "stages": stages, "params_m": param_count(suite)}


def param_count(suite: Suite) -> float | None:
    """Millions of parameters of the eager baseline's graphs (each shared parameter once)."""
    eager = suite.variants.get(BASELINE)
    modules = getattr(eager.counting.inner, "modules", None) if eager is not None else None
    if not modules:
        return None
    seen, n = set(), 0
    for module in modules.values():
        for prm in module.parameters():
            if id(prm) not in seen:
                seen.add(id(prm))
                n += prm.numel()
    return round(n / 1e6, 3)


class SizeRun:
    """One random-weight model size: its standalone graphs, and each stage's entry as it is measured."""

    def __init__(self, suite: Suite, size: str):
        p = suite.plan
        self.suite, self.size, self.big = suite, size, size == BIG
        self.precisions = tuple(x for x in p.size_precisions
                                if x in p.precisions and (x == Precision.FP32 or not self.big))
        self.cuts = tuple(LLM_CUTS) if self.big else (None,)
        self._llm: dict = {}
        self._orts: dict[int, object] = {}
        self.main = self._export_main()

    # ---- the graphs
    def _export(self, model, graphs: tuple[str, ...]):
        from tpo.export.standalone import export_standalone

        return export_standalone(model, graphs, self.precisions, self.suite.plan.cache or cache_root(),
                                 weights=WEIGHTS, log=self.suite.log)

    def _export_main(self):
        from tpo.export.standalone import random_model

        specs = [s for s in SIZE_GRAPHS if not self.big or s not in (G.LLM, G.VISION_ENCODER)]
        cut = " (LLM cut to 1 layer)" if self.big else ""
        self.suite.log(f"model size {self.size}: building{cut} and exporting {len(specs)} graph(s) at "
                       f"{', '.join(map(str, self.precisions))} (cached after the first run; minutes)")
        if self.big:
            self.suite.note("videochat-tpo: the 16-frame vision encoder (3136 tokens) is not run on this machine; "
                            "the 1-frame encoder is (x16 its time is a lower bound: attention grows faster than "
                            "linearly)")
        return self._export(random_model(self.size, llm_layers=1 if self.big else None), G.names(specs))

    def llm_files(self, cut: str | None):
        """The LLM's graphs at `cut` (a `LLM_CUTS` key; None: the main model's own). The cut LLMs are built one
        at a time, when first needed, and dropped after: they do not fit together."""
        if cut is None:
            return self.main
        if cut not in self._llm:
            from tpo.export.standalone import llm_only

            self._llm.clear()
            layers, vocab = LLM_CUTS[cut]
            self.suite.log(f"model size {self.size}: the LLM alone, {layers} layer(s)"
                           + (f", vocabulary cut to {vocab}" if vocab else ""))
            stand_in = llm_only(self.size, layers, vocab=vocab)
            self._llm[cut] = self._export(stand_in, (G.LLM.name,))
            stand_in.lm = None            # the graph's module holds its own merged copy
        return self._llm[cut]

    def runners(self, files, graph: str, threads: int) -> dict[str, CountingRunner]:
        p = self.suite.plan
        out = {}
        if "torch" in p.backends:
            out[BASELINE] = CountingRunner(eager_runner(files.defs[graph], p.torch_device))
        if "onnxruntime" in p.backends:
            if threads not in self._orts:
                self._orts[threads] = quiet_onnxruntime(p.onnx_providers, threads=threads)
            for prec in self.precisions:
                out[variant_name("onnxruntime", prec, p.providers)] = CountingRunner(
                    self._orts[threads].load(files.entries[(graph, prec)]))
        return out

    # ---- the measurements
    def items(self) -> list[tuple[str, str | None, int]]:
        """(stage, LLM cut, threads) in the order measured."""
        threads = self.suite.plan.threads
        out = [(g, None, threads) for g in self.main.defs if g != G.LLM.name]
        out += [(g, cut, threads) for cut in self.cuts for g in LLM_STAGES] + [("track_step", None, threads)]
        if threads > 1 and not self.big:
            out += [(g, None, 1) for g in GOAL_STAGES if g == "track_step" or g in self.main.defs]
        return out

    def measure(self) -> dict:
        result: dict = {"weights": "random (seed 0)", "stages": [], "extrapolated": {}}
        if self.big:
            result["llm_layers_measured"] = list(self.cuts)
        result["params_m"] = round(sum(x.numel() for x in self.main.model.parameters()) / 1e6, 1)
        if self.big:
            result["params_note"] = "with the LLM cut to 1 layer"
        items = self.items()
        bar = self.suite.bar(len(items), f"size {self.size}")
        by_stage, skipped = {}, set()
        for stage, cut, threads in items:
            name = stage if cut is None else f"{stage}[{LAYER_LABELS[cut]}]"
            if threads != self.suite.plan.threads:
                name = f"{name}[threads={threads}]"
            bar.set_postfix_str(name)
            with torch_threads(threads):
                if stage == "track_step":
                    entry = self.track_step(name, threads, skipped)
                else:
                    entry = self.graph(stage, cut, name, threads, skipped)
            if entry is not None:
                entry["threads"] = threads
                result["stages"].append(entry)
                by_stage[(stage, cut)] = entry
            bar.update(1)
        bar.close()
        if self.big:
            result["extrapolated"] = extrapolate_layers(by_stage, load_config_layers(self.size), base="1",
                                                        per_layer=("1v", "2v"))
        return result

    def rounds(self) -> tuple[int, int]:
        p = self.suite.plan
        return (2, 1) if self.big else (max(2, p.rounds - 2), max(1, p.iters // 2))

    def feed_sizes(self, stage: str) -> dict[str, int]:
        cfg = self.main.model.cfg
        prompt_len = cfg.num_visual_tokens + 24
        prefill = {"batch": 1, "num_vision_tokens": cfg.vision.num_frames * cfg.vision.grid ** 2,
                   "sequence": prompt_len, "past_sequence": 0, "total_sequence": prompt_len, "boxes": 1,
                   "text_tokens": 12, "clips": 32, "objects": 1}
        if stage == LLM_STAGES[1]:
            return dict(prefill, sequence=1, past_sequence=prompt_len, total_sequence=prompt_len + 1)
        return prefill

    def graph(self, stage: str, cut: str | None, name: str, threads: int, skipped: set[str]) -> dict | None:
        """One graph (or LLM stage) on its example feed; None when its floor says it would take too long."""
        suite, graph = self.suite, G.LLM.name if stage in LLM_STAGES else stage
        files = self.llm_files(cut) if stage in LLM_STAGES else self.main
        feed = example_feed(files.defs[graph], self.feed_sizes(stage))
        count = suite.count(graph, feed, files.entries[(graph, Precision.FP32)].path)
        if count is not None:
            fl = floor.floor_seconds(count, suite.result["peak"])["floor_s"]
            if fl * 4 > suite.plan.size_call_cap_s:      # eager CPU runs land ~2-10x above the floor
                suite.note(f"{self.size} {name}: skipped, its floor ({fl:.2f} s per call) predicts calls over "
                           f"{suite.plan.size_call_cap_s:.0f} s here")
                skipped.add(graph)
                return None
        runners = self.runners(files, graph, threads)
        probes = {n: EngineClock({graph: r}).take for n, r in runners.items()}
        fns = {n: (lambda r=r, f=feed: r.run(f)) for n, r in runners.items()}
        rounds, iters = self.rounds()
        timed = suite.time_stage(name, fns, probes=probes, rounds=rounds, iters=iters, warmup=1,
                                 budget_s=suite.plan.stage_budget_s * (3 if self.big else 1.5))
        return suite.stage_entry(timed, group=f"size:{self.size}", graph=graph, count=count,
                                 shapes=input_shapes(G.graph(graph), feed))

    def track_step(self, name: str, threads: int, skipped: set[str]) -> dict | None:
        """The tracking step on random frames, past its prompted frame (every shape is static, so the cost of a
        step does not depend on how full the bank is)."""
        fast = {s.name for s in G.FAST_PATH}
        if skipped & fast:
            self.suite.note(f"{self.size} {name}: skipped with {', '.join(sorted(skipped & fast))}")
            return None
        files, cfg = self.main, self.main.model.cfg
        if not fast <= set(files.defs):
            return None
        rng = np.random.default_rng(0)
        mh = cfg.mask_head
        pix = [rng.standard_normal((1, 3, mh.image_size, mh.image_size)).astype(np.float32) for _ in range(3)]
        prompt = rng.standard_normal((1, cfg.adapters.track_prompt_tokens, mh.hidden_size)).astype(np.float32)
        per_graph = {g: self.runners(files, g, threads) for g in fast}
        fns, probes = {}, {}
        for v in per_graph[G.MASK_IMAGE_ENCODER.name]:
            runners = {g: per_graph[g][v] for g in fast}
            tracker = tracker_on(runners, tracker_section(cfg), prompt)
            for i in range(2):        # frame 0 (prompted) + one tracked frame
                tracker.step(pix[i % len(pix)])
            fns[v] = (lambda t=tracker: t.step(pix[0]))
            probes[v] = EngineClock(runners).take
        rounds, iters = self.rounds()
        timed = self.suite.time_stage(name, fns, probes=probes, rounds=rounds, iters=iters, warmup=1,
                                      budget_s=self.suite.plan.stage_budget_s * 1.5)
        counts = [self.suite.count(s.name, example_feed(files.defs[s.name], {"objects": 1}),
                                   files.entries[(s.name, Precision.FP32)].path) for s in TRACKED_STEP_GRAPHS]
        return self.suite.stage_entry(timed, group=f"size:{self.size}", count=sum_counts(counts),
                                      label=name.replace("track_step", "per-frame tracking step"))


def tracker_section(cfg) -> Tracker:
    """The manifest's tracker section for a model configuration (what the exporter would write)."""
    from tpo.model.mask_head import NO_OBJECT_SCORE

    mh = cfg.mask_head
    return Tracker(mh.num_maskmem, mh.max_object_pointers, mh.image_size, mh.low_res_size, mh.feature_size,
                   mh.hidden_size, mh.memory_dim, cfg.adapters.track_prompt_tokens, NO_OBJECT_SCORE)
