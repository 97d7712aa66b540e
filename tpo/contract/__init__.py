"""The contract between the PyTorch side (model, export) and the deployment side (runtime, bench): the graphs
and their tensors (`graphs`), the manifest an export writes (`manifest`), and the tasks a question routes to
(`tasks`). The ground floor: it imports neither torch nor onnx (a test checks), so every side may import it,
and nothing else in the project spells a graph tensor's name.
"""

from . import graphs, tasks
from .graphs import GRAPHS, GraphSpec, KVCache, TensorSpec
from .manifest import (
    EMBEDDINGS,
    FORMAT,
    LLM,
    MANIFEST_FILE,
    TASK_EMBEDDING,
    TOKEN_TABLE,
    TOKENIZER,
    Dim,
    FileEntry,
    GraphEntry,
    Manifest,
    Precision,
    Preprocess,
    Tokens,
    Tracker,
    sha256_file,
)
from .tasks import CHAT, TASKS, Task

__all__ = [
    "CHAT", "EMBEDDINGS", "FORMAT", "GRAPHS", "LLM", "MANIFEST_FILE", "TASKS", "TASK_EMBEDDING", "TOKENIZER",
    "TOKEN_TABLE", "Dim", "FileEntry", "GraphEntry", "GraphSpec", "KVCache", "Manifest", "Precision", "Preprocess",
    "Task", "TensorSpec", "Tokens", "Tracker", "graphs", "sha256_file", "tasks",
]
