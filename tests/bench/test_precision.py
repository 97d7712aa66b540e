"""`python -m tpo.bench.precision` on the tiny fp32 export: every row measured, the quantised graphs really are
(smaller, another error than zero), a streamed full-width LLM cut included. Speed itself is not asserted."""

from __future__ import annotations

import json

from tpo.bench import precision


def test_precision_report_rows(fp32_artifacts, tmp_path, capsys):
    out = tmp_path / "report"
    assert precision.main(["--artifacts", str(fp32_artifacts), "--out", str(out), "--graphs", "connector",
                           "--llm-layers", "1", "--iters", "1", "--prompt", "16"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["graphs"]
    assert set(rows) == {"connector", "llm (1 layers, full width) prefill", "llm (1 layers, full width) decode"}
    assert rows["connector"]["int8 qdq"]["size_ratio"] > 2 and 0 < rows["connector"]["int8 qdq"]["max_rel_err"] < 0.2
    decode = rows["llm (1 layers, full width) decode"]
    assert decode["int4 weight-only"]["size_ratio"] > decode["int8 weight-only"]["size_ratio"] > 1.5
    assert all(r["ms"] > 0 for v in rows.values() for r in v.values())
    assert "| connector | int8 qdq |" in (out / "report.md").read_text()
    assert not (out / "graphs").exists()                  # the quantised graphs are removed


def test_precision_refuses_a_non_fp32_export_and_unknown_graphs(fp16_artifacts, fp32_artifacts, tmp_path, capsys):
    assert precision.main(["--artifacts", str(fp16_artifacts), "--out", str(tmp_path / "a")]) == 2
    assert precision.main(["--artifacts", str(fp32_artifacts), "--out", str(tmp_path / "b"), "--graphs", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tpo-bench-precision:")]
    assert len(err) == 2 and "an fp32 export" in err[0] and "--graphs nope" in err[1]
