"""Renaming state dicts between our module names and the released checkpoint's names.

Components whose parameters already carry the release's names need no rules. Components built on
transformers' classes (the Q-Former, SAM2) declare ordered regex rules; each rule set is checked to
be a bijection on the names it sees, so `to_release(from_release(sd)) == sd` by construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, str]]


def apply_rules(names: Iterable[str], rules: Rules) -> dict[str, str]:
    """old name -> new name, first matching rule wins; names matching no rule stay as they are."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, str] = {}
    for name in names:
        new = name
        for pattern, repl in compiled:
            if pattern.search(name):
                new = pattern.sub(repl, name)
                break
        out[name] = new
    if len(set(out.values())) != len(out):
        raise AssertionError("renaming rules map two names onto one")
    return out


def rename(sd: Mapping[str, torch.Tensor], rules: Rules) -> StateDict:
    mapping = apply_rules(sd.keys(), rules)
    return {mapping[k]: v for k, v in sd.items()}


def add_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def take_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The entries under `prefix`, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}
