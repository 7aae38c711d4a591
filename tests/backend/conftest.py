"""Backend test setup: offline hub, one CPU thread, and a tiny random model built once per session."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub/transformers/diffusers: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random model (seed 0) with ControlNets depth/normal/edges: a ``RandomModelPaths``."""
    from neurender.models.random_models import build_random_model

    return build_random_model(tmp_path_factory.mktemp("tiny-model"), size="tiny", seed=0)
