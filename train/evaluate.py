"""Score a model on a synthetic dataset with each benchmark's standard metric (the library of `tpo-eval`).

Every query of the dataset is asked once through `tpo.model.generate.generate`, in dataset order (clip
by clip, queries in file order): track, temporal and conversation queries about the whole clip, region
queries about their one frame given as an image. Ground truth comes from the annotations, never from
the (lossy) video the model sees.

    routing       accuracy: generate's first trigger == the query's route ("none" for conversation)
    track         success AUC and precision @ 20 px (OTB one-pass; frames where the object is invisible
                  are left out), J, F and J&F (DAVIS; every frame, an empty mask where the object is
                  absent scores 1); each per query, then averaged over queries
    region        Acc@0.5 (RefCOCO): predicted box vs the object's box in the asked frame
    temporal      R1@{0.3, 0.5, 0.7} and mIoU (Charades-STA) of the top-1 window against the query's
                  spans (the best-matching span counts); mAP (QVHighlights, IoU 0.5:0.05:0.95) of the
                  first 10 scored windows against all spans
    conversation  exact match of the answer text (normalised as `metrics.normalise_answer`)

Each task's scorer lives with its training head (`tpo.train.heads`, `TrainHead.scorer()`); the chat scorer here.

BLIND BASELINES: each metric is printed beside what a model that does not look (or does not listen) scores
on the same queries (each task's `Scorer.baselines`): the constant route, the constant answer per question
type, the mean box, the whole-clip and the mean window, the first-frame box held; a metric counts by its
margin over the best of them (`margins`). QUERY SWAP (swap=True): each region and track query is asked
again about another object of the same clip; it passes when the answer follows the new question.

MISS RULE: task metrics are computed over ALL queries of the task. A query whose first trigger is not
its route counts as a miss there: no box, no window, empty masks, no answer (even if the right head ran
after a wrong first trigger). Routing accuracy measures the routing itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from tpo.contract.tasks import CHAT, TASKS
from tpo.data import metrics
from tpo.data.synthetic import ROUTES, Clip, Query
from tpo.data.synthetic import TASKS as DATA_TASKS
from tpo.errors import InputError
from tpo.model.generate import GenerationResult, generate
from tpo.model.preprocess import Video

from .heads import Scorer, train_head

MISS_RULE = ("metrics cover all queries of a task; a query whose first trigger is not its route scores "
             "as a miss (no box, no window, empty masks, no answer)")


def route_names() -> tuple[str, ...]:
    """What generate's `.task` can be: the dataset's routes (in its task order), then any other registered
    task, then the chat answer."""
    return tuple(dict.fromkeys([*(ROUTES[t] for t in DATA_TASKS), *TASKS, CHAT]))


ROUTE_NAMES = route_names()


def _check_args(dataset, max_clips: int | None, tasks: Sequence[str] | None) -> tuple[list[Clip], tuple[str, ...]]:
    if max_clips is not None and not (isinstance(max_clips, int) and max_clips >= 1):
        raise InputError(f"max_clips must be an integer >= 1, got {max_clips!r}")
    chosen = tuple(DATA_TASKS) if tasks is None else tuple(tasks)
    unknown = [t for t in chosen if t not in DATA_TASKS]
    if unknown or not chosen:
        raise InputError(f"tasks {list(chosen)}: choose one or more of {list(DATA_TASKS)}")
    clips = dataset.clips[:max_clips]
    for c in clips:
        if c.frames is None:
            raise InputError(f"{dataset.root}: clip {c.name} has no frames; load the dataset with "
                             "frames='video' or 'render'")
    if not any(q.task in chosen for c in clips for q in c.queries):
        raise InputError(f"{dataset.root}: no queries of tasks {list(chosen)} in the first {len(clips)} clips")
    return clips, chosen


def _ask(model, tokenizer, clip: Clip, video: Video, q: Query) -> GenerationResult:
    """An image task's question is asked about its one frame, as trained; the others about the clip."""
    task = TASKS.get(q.route)
    if task is not None and task.media == "image":
        return generate(model, tokenizer, Video(clip.frames[q.frame:q.frame + 1], clip.fps), q.question)
    return generate(model, tokenizer, video, q.question)


def question_type(question: str) -> str:
    """The question without its object words: its first two words ("how many", "what colour", "where is")."""
    return " ".join(question.split()[:2])


class ChatScorer:
    """Exact match of the answer text (normalised as `metrics.normalise_answer`). Blind baseline: the most
    common reference answer of each question type (`question_type`), the best constant a model that does not
    look can give."""

    def __init__(self) -> None:
        self.pred: list = []          # pred text | None
        self.reference: list = []
        self.types: list[str] = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        self.pred.append(answer)
        self.reference.append(q.answer)
        self.types.append(question_type(q.question))
        return {"exact_match": metrics.exact_match([answer], [q.answer]) == 1.0}

    def summary(self) -> dict[str, float]:
        return {"exact_match": metrics.exact_match(self.pred, self.reference)}

    def baselines(self) -> dict[str, dict[str, float]]:
        majority = {t: Counter(metrics.normalise_answer(r) for r, u in zip(self.reference, self.types, strict=True) if u == t)
                    .most_common(1)[0][0] for t in set(self.types)}
        return {"constant answer": {"exact_match": metrics.exact_match([majority[t] for t in self.types],
                                                                       self.reference)}}


def _answer(q: Query, res: GenerationResult):
    """The answer the scorer reads: the first result of the query's route, None when the route was missed."""
    if res.task != q.route:
        return None
    return res.text if q.route == CHAT else res.of(q.route)[0]


def margins(metrics_: dict, baselines: dict) -> dict:
    """Each metric's margin over its best blind baseline: {task: {metric: (margin, best baseline name)}}."""
    out: dict = {}
    for task, values in metrics_.items():
        if not isinstance(values, dict):
            best = max(baselines.get(task, {}).items(), key=lambda kv: kv[1], default=None)
            if best is not None:
                out[task] = {"margin": values - best[1], "baseline": best[0], "baseline_value": best[1]}
            continue
        for name, value in values.items():
            found = [(b, v[name]) for b, v in baselines.get(task, {}).items() if name in v]
            if found:
                b, v = max(found, key=lambda bv: bv[1])
                out.setdefault(task, {})[name] = {"margin": value - v, "baseline": b, "baseline_value": v}
    return out


class _Scores:
    """Every query's route and produced task, and one scorer per route (the task's `TrainHead.scorer()`,
    the chat scorer for CHAT), made on its first query."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str]] = []               # (expected route, produced task)
        self.scorers: dict[str, Scorer] = {}

    def add(self, clip: Clip, q: Query, res: GenerationResult) -> dict:
        """Score one query; returns its record."""
        routed = res.task == q.route
        self.routes.append((q.route, res.task))
        rec = {"qid": q.qid, "vid": q.vid, "task": q.task, "route": q.route, "routed": res.task,
               "route_correct": routed, "question": q.question, "reference": q.answer, "text": res.text}
        if q.route not in self.scorers:
            self.scorers[q.route] = ChatScorer() if q.route == CHAT else train_head(q.route).scorer()
        rec.update(self.scorers[q.route].add(clip, q, _answer(q, res)))
        return rec

    def add_swap(self, clip: Clip, q: Query, swapped: Query, res: GenerationResult) -> dict:
        """Score the swapped twin of query q (the same clip asked about another object)."""
        return {"swap_question": swapped.question, "swap_routed": res.task,
                **self.scorers[q.route].add_swap(clip, q, swapped, _answer(swapped, res))}

    def baselines(self) -> dict:
        """Per dataset task: {baseline name: {metric: value}}, and routing's constant route."""
        gts = [g for g, _ in self.routes]
        out: dict = {"routing_accuracy": {"constant route": Counter(gts).most_common(1)[0][1] / len(gts)}}
        for t in DATA_TASKS:
            scorer = self.scorers.get(ROUTES[t])
            if scorer is not None and hasattr(scorer, "baselines"):
                out[t] = scorer.baselines()
        return out

    def swaps(self) -> dict:
        out = {}
        for t in DATA_TASKS:
            scorer = self.scorers.get(ROUTES[t])
            if scorer is not None and hasattr(scorer, "swap_summary") and scorer.swap_summary():
                out[t] = scorer.swap_summary()
        return out

    def summary(self) -> dict:
        out: dict = {"routing_accuracy": metrics.routing_accuracy([p for _, p in self.routes],
                                                                   [g for g, _ in self.routes])}
        for t in DATA_TASKS:                      # one section per dataset task, named as the dataset names it
            if ROUTES[t] in self.scorers:
                out[t] = self.scorers[ROUTES[t]].summary()
        return out

    def counts(self, clips: int, tasks: tuple[str, ...]) -> dict:
        names = route_names()
        per_task = {t: sum(g == ROUTES[t] for g, _ in self.routes) for t in tasks}
        correct = {t: sum(g == ROUTES[t] and p == g for g, p in self.routes) for t in tasks}
        confusion = {ROUTES[t]: {r: sum(g == ROUTES[t] and p == r for g, p in self.routes) for r in names}
                     for t in tasks}
        return {"clips": clips, "queries": len(self.routes), "queries_per_task": per_task,
                "routed_correctly": correct, "confusion": confusion}


def evaluate(model, tokenizer, dataset, *, max_clips: int | None = None, tasks: Sequence[str] | None = None,
             progress: bool = False, records: bool = False, swap: bool = False,
             ask: Callable[[Clip, Video, Query], GenerationResult] | None = None) -> dict:
    """Ask every query of `dataset` (a `tpo.data.files.Dataset` loaded with frames) and score the answers.

    max_clips: only the first N clips; tasks: a subset of the dataset's tasks ("track", "region", "temporal",
    "conversation"); progress: a tqdm bar on stderr; records: add one record per query (question,
    produced route and text, predictions, ground truth and the query's own score); swap: also ask each region
    and track query's swapped twin (the same clip, another object) and score whether the answer follows the
    question; ask: who answers (clip, video, query) -> GenerationResult (default: `generate` with the model;
    `tpo.train.runtime_eval` asks `tpo-run`).
    Returns one JSON-able dict:
        data, scoring (the miss rule, see module docstring),
        metrics: routing_accuracy, and per task present: track {success_AUC, precision@20px, J, F, J&F,
                 success_AUC_multi, J&F_small, J&F_large, absent_accuracy}, region {Acc@0.5, mIoU},
                 temporal {R1@0.3, R1@0.5, R1@0.7, mIoU, mAP, mAP@0.5, mAP@0.75}, conversation {exact_match};
                 all fractions in [0, 1]
        baselines: the same metrics of each blind baseline, per task (`Scorer.baselines`)
        margins: each metric minus its best blind baseline, with that baseline's name
        swap: per task with a swap test, {clips, pass_rate} (only with swap=True)
        counts: clips, queries, queries_per_task, routed_correctly (per task), confusion
                (expected route -> produced first trigger -> count)
        records: [...] (only with records=True)
    """
    clips, chosen = _check_args(dataset, max_clips, tasks)
    if ask is None:
        def ask(clip: Clip, video: Video, q: Query) -> GenerationResult:
            return _ask(model, tokenizer, clip, video, q)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(q.task in chosen for c in clips for q in c.queries), desc="queries", unit="query")
    scores, recs = _Scores(), []
    for clip in clips:
        video = Video(clip.frames, clip.fps)
        for q in (q for q in clip.queries if q.task in chosen):
            rec = scores.add(clip, q, ask(clip, video, q))
            scorer = scores.scorers[q.route]
            if swap and hasattr(scorer, "swap_query"):
                twin = scorer.swap_query(clip, q)
                if twin is not None:
                    rec["swap"] = scores.add_swap(clip, q, twin, ask(clip, video, twin))
            if records:
                recs.append(rec)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    summary, baselines = scores.summary(), scores.baselines()
    out = {"data": str(dataset.root), "scoring": MISS_RULE, "metrics": summary, "baselines": baselines,
           "margins": margins(summary, baselines), "counts": scores.counts(len(clips), chosen)}
    if swap:
        out["swap"] = scores.swaps()
    if records:
        out["records"] = recs
    return out


__all__ = ["MISS_RULE", "ROUTE_NAMES", "evaluate", "margins", "question_type", "route_names"]
