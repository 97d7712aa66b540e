"""The tasks a question can be routed to, declared once: the registry that model, training, export, runtime and
bench iterate instead of switching on strings.

A task is what the release wires between a trigger token and a head:
- the LLM emits `trigger` (e.g. `<box_begin>`); training pairs it with `placeholder` (e.g. `<boxes>`), whose
  input-embedding row is overwritten by the learned task embedding `embedding` (the release's tensor name);
- one more LLM step feeds that embedding; its final-norm hidden state goes through the task router, whose
  output `router_output` (a `task_router` graph output) is the head's prompt;
- `media`: "image" when the head answers about one frame (region: asked on the frame alone, as trained),
  "video" when it answers about the clip.
The chat answer (no trigger) is the task named `CHAT`; it has no head.

Each side keeps its own module per task (model/heads, runtime/tasks, train/...) registered under `Task.name`.
Adding a task: declare it here (`register`), give each side that must know it its module (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import graphs as G

CHAT = "none"
MEDIA = ("image", "video")


@dataclass(frozen=True)
class Task:
    name: str
    trigger: str            # the token the LLM emits to route here
    placeholder: str        # the token after it in training, whose embedding row is the task embedding
    embedding: str          # the release's tensor name of the learned task embedding [1, 1, H]
    router_output: str      # the task_router output that is this head's prompt
    media: str              # "image" | "video"

    def __post_init__(self) -> None:
        if self.media not in MEDIA:
            raise ValueError(f"task {self.name}: media {self.media!r} must be one of {MEDIA}")


REGION = Task("region", "<box_begin>", "<boxes>", "box_token", G.REGION_BOX.name, "image")
TEMPORAL = Task("temporal", "<time_begin>", "<temp>", "temporal_token", G.TEMPORAL_PROMPT.name, "video")
TRACK = Task("track", "<track_begin>", "<tracking>", "track_token", G.TRACK_PROMPT.name, "video")

# the 7 task tokens, in the order the release adds them to the vocabulary (ids vocab_base .. vocab_base + 6)
TASK_TOKENS = ("<box_begin>", "<time_begin>", "<temp>", "<boxes>", "<track_begin>", "<tracking>", "<track_box>")
TRACK_BOX = "<track_box>"   # a user's box in the question, embedded by the box encoder

TASKS: dict[str, Task] = {t.name: t for t in (REGION, TEMPORAL, TRACK)}


def register(task: Task) -> Task:
    """Add a task to the registry (a new head; tests add a toy one). Its trigger and name must be new."""
    if task.name in TASKS or task.name == CHAT:
        raise ValueError(f"task {task.name!r} is already registered")
    if any(t.trigger == task.trigger for t in TASKS.values()):
        raise ValueError(f"task {task.name}: trigger {task.trigger} already routes to another task")
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    TASKS.pop(name, None)


def task(name: str) -> Task:
    found = TASKS.get(name)
    if found is None:
        raise KeyError(f"no task {name!r} (known: {', '.join(TASKS)})")
    return found


def by_trigger(token: str) -> Task | None:
    return next((t for t in TASKS.values() if t.trigger == token), None)
