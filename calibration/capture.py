"""Record what each graph really sees: the fp32 pipeline runs on calibration clips and every graph's inputs are
captured on the way (vision tokens for the connector, the memory bank for memory attention, prefill and decode
activations for the LLM), never random tensors.

    captures = record(fp32_artifacts, clips, per_graph=16)      # run the chain, keep the inputs
    captures.save(folder); captures = Captures.load(folder)     # replay: no pipeline run the second time

A folder holds `captures.json` (the fp32 graphs' sha256, the clips, per graph the sample count and the sha256
of its data file) and one `<graph>.safetensors` per graph (keys `<sample>/<input>`, numpy arrays: no pickle).
A data file's sha256 guards it on loading; the samples' own digest (`data_key`), with the graph's sha256 and the
method, keys the calibration cache.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo.contract import Manifest, sha256_file
from tpo.errors import CheckpointError, InputError
from tpo.signals import stop_point

from .sources import CalibrationClip

CAPTURES_FILE = "captures.json"
CAPTURES_FORMAT = 1


class _RecordingGraph:
    """A runner that keeps `limit` of its feeds (as the graph receives them: declared dtypes), a uniform sample
    of all its calls (reservoir sampling, seeded by the graph's name): the LLM's samples span clips, prefills
    and decode steps, not the first clip's prefill only."""

    def __init__(self, runner, samples: list[dict[str, np.ndarray]], limit: int):
        self._runner, self._samples, self._limit = runner, samples, limit
        self._seen = 0
        self._rng = np.random.default_rng(sum(runner.name.encode()))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot = self._seen if self._seen < self._limit else int(self._rng.integers(0, self._seen + 1))
        self._seen += 1
        if slot < self._limit:
            dtypes = self._runner.input_dtypes
            sample = {k: np.array(inputs[k], dtype=dt, copy=True) for k, dt in dtypes.items()}
            if slot < len(self._samples):
                self._samples[slot] = sample
            else:
                self._samples.append(sample)
        return self._runner.run(inputs)

    def __getattr__(self, name):            # seconds, calls, name: the runtime's own bookkeeping
        return getattr(self._runner, name)


class RecordingBackend:
    """Wraps a runtime backend; every graph it loads records its feeds into `samples[graph name]`."""

    def __init__(self, inner, per_graph: int):
        self.inner, self.per_graph = inner, per_graph
        self.name, self.description = inner.name, f"{inner.description} (recording)"
        self.samples: dict[str, list[dict[str, np.ndarray]]] = {}

    def load(self, graph):
        return _RecordingGraph(self.inner.load(graph), self.samples.setdefault(graph.name, []), self.per_graph)


@dataclass
class Captures:
    graphs: dict[str, list[dict[str, np.ndarray]]]          # graph name -> samples (input name -> array)
    graph_sha256: dict[str, str]                            # the fp32 graphs they were captured from
    clips: list[str] = field(default_factory=list)
    source: str = ""
    data_sha256: dict[str, str] = field(default_factory=dict)   # set by save / load

    def save(self, folder: Path) -> None:
        """Write the folder (into a temporary sibling, renamed when complete)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        if folder.exists():
            raise InputError(f"captures {folder}: exists already; choose another folder")
        tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            entries = {}
            for name, samples in self.graphs.items():
                tensors = {f"{i}/{k}": np.ascontiguousarray(v) for i, s in enumerate(samples) for k, v in s.items()}
                path = tmp / f"{name}.safetensors"
                save_file(tensors, str(path))
                self.data_sha256[name] = sha256_file(path)
                entries[name] = {"samples": len(samples), "sha256": self.data_sha256[name],
                                 "graph_sha256": self.graph_sha256[name]}
            meta = {"format": CAPTURES_FORMAT, "source": self.source, "clips": self.clips, "graphs": entries}
            (tmp / CAPTURES_FILE).write_text(json.dumps(meta, indent=1))
            tmp.rename(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> Captures:
        """Read a folder `save` wrote; every data file's sha256 is checked before it is read."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta_path = folder / CAPTURES_FILE
        if not meta_path.is_file():
            raise InputError(f"captures {folder}: no {CAPTURES_FILE} (record one with tpo-calibrate --record)")
        try:
            meta = json.loads(meta_path.read_text())
            entries = meta["graphs"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"captures {meta_path}: unreadable ({e})") from None
        if meta.get("format") != CAPTURES_FORMAT:
            raise CheckpointError(f"captures {meta_path}: format {meta.get('format')!r}, expected {CAPTURES_FORMAT}")
        graphs, graph_sha, data_sha = {}, {}, {}
        for name, entry in entries.items():
            path = folder / f"{Path(name).name}.safetensors"
            if not path.is_file():
                raise CheckpointError(f"captures {folder}: {path.name} is missing")
            if sha256_file(path) != entry["sha256"]:
                raise CheckpointError(f"captures {path}: sha256 differs from {CAPTURES_FILE} (changed or truncated)")
            flat = load_file(str(path))
            samples: list[dict[str, np.ndarray]] = [{} for _ in range(int(entry["samples"]))]
            for key, value in flat.items():
                index, _, input_name = key.partition("/")
                samples[int(index)][input_name] = value
            graphs[name], graph_sha[name], data_sha[name] = samples, entry["graph_sha256"], entry["sha256"]
        return cls(graphs, graph_sha, list(meta.get("clips", [])), str(meta.get("source", "")), data_sha)

    def data_key(self, name: str) -> str:
        """sha256 of graph `name`'s samples as arrays (names, dtypes, shapes, bytes, in order): the same for a
        live capture and its saved replay, so either finds the other's cached calibration."""
        import hashlib

        h = hashlib.sha256()
        for sample in self.graphs[name]:
            for key in sorted(sample):
                value = np.ascontiguousarray(sample[key])
                h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
                h.update(value.tobytes())
        return h.hexdigest()

    def check_graph(self, name: str, graph_sha256: str) -> None:
        """A capture is only good for the graph it came from: refuse one recorded from another graph."""
        if name not in self.graphs or not self.graphs[name]:
            raise InputError(f"captures: no samples for graph {name} (the clips never reached it)")
        if self.graph_sha256.get(name) != graph_sha256:
            raise InputError(f"captures: graph {name} was recorded from another graph (sha256 "
                             f"{self.graph_sha256.get(name, '?')[:12]}, this one {graph_sha256[:12]}); record again")


def record(artifacts: Path, clips: list[CalibrationClip], per_graph: int = 16, source: str = "",
           threads: int | None = None) -> Captures:
    """Run the fp32 artifacts on `clips` (each question of each clip, heads included, then a short track so the
    memory graphs see a memory bank) and keep up to `per_graph` input samples of every graph."""
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.session import Session

    manifest = Manifest.load(artifacts)
    manifest.verify()
    if any(g.precision.value != "fp32" for g in manifest.graphs.values()):
        raise InputError(f"calibration: {artifacts} is not an fp32 export (capture from the fp32 graphs)")
    backend = RecordingBackend(OnnxRuntimeBackend(threads=threads), per_graph)
    session = Session(manifest, backend)
    for clip in clips:
        stop_point()
        for _task, question, image_frame in clip.questions:
            frames = clip.frames if image_frame is None else clip.frames[min(image_frame, len(clip.frames) - 1)][None]
            session.ask(question, frames, clip.fps)
    return Captures(backend.samples, {n: g.sha256 for n, g in manifest.graphs.items() if n in backend.samples},
                    [c.name for c in clips], source)
