"""Building and loading the model prints no FutureWarning, DeprecationWarning or UserWarning to the user.

peft reads transformers' deprecated `is_gradient_checkpointing` on every model build; llm.py silences that
one message at the call. Every warning is recorded here ("always"), so a new one fails this test.
"""

import warnings

from tpo.model.checkpoint import default_checkpoint, load_checkpoint
from tpo.model.config import load_config
from tpo.model.tpo_model import build_model


def test_building_and_loading_the_tiny_model_warns_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(load_config("tiny"))
        load_checkpoint(default_checkpoint(), dtype="fp32")
    shown = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
             if issubclass(w.category, (FutureWarning, DeprecationWarning, UserWarning))]
    assert shown == []
