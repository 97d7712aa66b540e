"""The console commands answer --help and argument errors without importing torch, and document every option.

Each command runs in a fresh interpreter (`main(argv)` from pyproject's [project.scripts]); after it
returned, sys.modules must not hold torch or the model code. A user typing `tpo-train --help` waits a
fraction of a second, not the 20 s a torch import takes on a small CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "tpo.model.config", "tpo.train.recipe", "tpo.export.exporter")


def _scripts() -> dict[str, str]:
    """pyproject's [project.scripts] (Python 3.11+), else the installed distribution's console scripts."""
    try:
        import tomllib
    except ImportError:     # Python 3.10
        eps = metadata.distribution("tpo-edge").entry_points
        return {ep.name: ep.value for ep in eps if ep.group == "console_scripts"}
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


SCRIPTS = _scripts()


def run_command(target: str, *argv: str) -> tuple[int, str, str, str]:
    """(exit code, stdout, stderr, heavy modules imported) of the entry point `module:function`."""
    module, func = target.split(":")
    code = (
        "import sys\n"
        f"from {module} import {func} as main\n"
        "try:\n"
        "    rc = main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('imported:', ','.join(heavy) or '-', file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    imported = lines[-1].split(":", 1)[1].strip() if lines and lines[-1].startswith("imported:") else "?"
    return out.returncode, out.stdout, "\n".join(lines[:-1]).strip(), imported


HELP_CASES = [(name, ()) for name in SCRIPTS] + [
    ("tpo-data", ("make",)), ("tpo-data", ("info",)), ("tpo-model", ("info",)), ("tpo-model", ("verify",)),
    ("tpo-model", ("demo",)), ("tpo-kernels", ("path",)),
]


@pytest.mark.parametrize("name, sub", HELP_CASES, ids=[" ".join((n, *s)) for n, s in HELP_CASES])
def test_help_is_printed_without_importing_torch(name, sub):
    rc, out, err, imported = run_command(SCRIPTS[name], *sub, "--help")
    assert rc == 0, err
    assert out.startswith(f"usage: {name}"), out[:200]
    assert imported == "-", f"{name} {' '.join(sub)} --help imported {imported}"


def test_every_documented_command_is_covered():
    assert {"tpo-train", "tpo-data", "tpo-eval", "tpo-model", "tpo-bench", "tpo-export"} <= set(SCRIPTS)


@pytest.mark.parametrize("argv, words", [
    (["--out", "x", "--stages", "0,9"], "--stages: unknown stage(s) [9]"),
    (["--out", "x", "--stages", "a"], "--stages must be a comma list of integers"),
    (["--out", "x", "--heads", "region,audio"], "--heads: unknown head(s) ['audio']"),
    (["--out", "x", "--config", "huge"], "--config 'huge': unknown config; choose one of small, tiny"),
    (["--out", "x", "--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--out", "x", "--stage2-steps", "-1"], "--stage2-steps -1: must be >= 0"),
    (["--out", "x", "--lr", "0"], "--lr 0.0: must be > 0"),
])
def test_train_argument_errors_are_one_line_without_torch(argv, words, tmp_path):
    rc, _, err, imported = run_command(SCRIPTS["tpo-train"], *argv)
    assert rc == 2 and err.startswith("tpo-train: error: ") and words in err and len(err.splitlines()) == 1, err
    assert imported == "-"


def test_train_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    rc, _, err, imported = run_command(SCRIPTS["tpo-train"], "--out", str(tmp_path / "f"))
    assert rc == 2 and "exists and is not a folder" in err and imported == "-"


@pytest.mark.parametrize("flag, value, says", [("--vision-lr", "0", "--vision-lr 0.0"),
                                              ("--vision-pool-clips", "0", "--vision-pool-clips 0"),
                                              ("--vision-category-weight", "-1", "--vision-category-weight -1.0"),
                                              ("--connector-layout", "grid", "--connector-layout")])
def test_train_stage0_settings_are_checked_before_anything_loads(tmp_path, flag, value, says):
    rc, _, err, imported = run_command(SCRIPTS["tpo-train"], "--out", str(tmp_path / "r"), flag, value)
    assert rc == 2 and says in err and imported == "-", err


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from tpo.data.cli import main as data_main

    out = tmp_path_factory.mktemp("data") / "d"
    assert data_main(["make", "--out", str(out), "--clips", "1", "--seed", "7", "--json"]) == 0
    return out


@pytest.mark.parametrize("extra, words", [
    (["--max-clips", "0"], "--max-clips 0: must be >= 1"),
    (["--config", "huge"], "--config 'huge': unknown config"),
    (["--checkpoint", "/nonexistent/ckpt"], "--checkpoint /nonexistent/ckpt: no such checkpoint"),
])
def test_eval_argument_errors_are_one_line_without_torch(extra, words, tiny_dataset, capsys):
    rc, _, err, imported = run_command(SCRIPTS["tpo-eval"], "--data", str(tiny_dataset), *extra)
    assert rc == 2 and err.startswith("tpo-eval: error: ") and words in err and len(err.splitlines()) == 1, err
    assert imported == "-"


def test_eval_missing_data_folder_without_torch(tmp_path):
    rc, _, err, imported = run_command(SCRIPTS["tpo-eval"], "--data", str(tmp_path / "absent"))
    assert rc == 2 and "no such dataset folder" in err and imported == "-"


def test_model_info_unknown_config_lists_the_names_without_torch():
    rc, _, err, imported = run_command(SCRIPTS["tpo-model"], "info", "--config", "huge")
    assert rc == 2 and len(err.splitlines()) == 1 and imported == "-", err
    assert "choose one of small, tiny, videochat-tpo" in err
    rc, _, err, imported = run_command(SCRIPTS["tpo-model"], "verify", "/nonexistent/ckpt")
    assert rc == 2 and "/nonexistent/ckpt: no such checkpoint" in err and imported == "-"


# ------------------------------------------------------------------------------------------ help texts
def _actions(parser: argparse.ArgumentParser, path: str = ""):
    """(where, action) for every option and positional of `parser` and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}".strip())
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def _parsers():
    from tpo.bench.cli import build_parser as bench_parser
    from tpo.data.cli import build_parser as data_parser
    from tpo.export.cli import build_parser as export_parser
    from tpo.model.cli import build_parser as model_parser
    from tpo.train.eval_cli import build_parser as eval_parser
    from tpo.train.train_cli import build_parser as train_parser

    return {"tpo-train": train_parser(), "tpo-data": data_parser(), "tpo-eval": eval_parser(),
            "tpo-model": model_parser(), "tpo-export": export_parser(), "tpo-bench": bench_parser()}


@pytest.mark.parametrize("name", ["tpo-train", "tpo-data", "tpo-eval", "tpo-model", "tpo-export", "tpo-bench"])
def test_every_option_has_a_help_string(name):
    parser = _parsers()[name]
    missing = [f"{where} {'/'.join(a.option_strings) or a.dest}".strip() for where, a in _actions(parser)
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert missing == [], f"{name}: no help for {missing}"


def test_data_make_help_explains_clips_and_seed():
    rc, out, _, _ = run_command(SCRIPTS["tpo-data"], "make", "--help")
    assert rc == 0
    flat = " ".join(out.split())
    assert "--clips CLIPS number of clips to write" in flat and "--seed SEED seed of everything drawn" in flat


def test_model_info_help_lists_the_config_names():
    from tpo.model.presets import preset_names

    rc, out, _, _ = run_command(SCRIPTS["tpo-model"], "info", "--help")
    flat = " ".join(out.split())
    assert rc == 0 and f"configuration: {', '.join(preset_names())}, or a .json file" in flat


# ------------------------------------------------------------------------------------------ .gitignore
@pytest.mark.parametrize("path", ["artifacts/tiny-fp16/manifest.json", "demo/videos/clip_00000.mp4",
                                  "demo/events.jsonl"])
def test_readme_output_folders_are_ignored(path):
    """The README's main command writes artifacts/ and demo/ in the checkout: git must not offer them."""
    out = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert out.returncode == 0, f"{path} is not ignored"


@pytest.mark.parametrize("path", ["model/demo.py", "train/artifacts/x.py"])
def test_only_the_top_level_folders_are_ignored(path):
    out = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert out.returncode == 1, f"{path} is ignored: the patterns must be anchored"
