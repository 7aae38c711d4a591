"""Keep one loaded pipeline alive between jobs while the model selection stays the same.

Loading is the slow part of a short job (seconds to a minute for SD1.5 on CPU), so the server and the CLI ask the
cache; it reloads only when (model, controlnets, loras, device, dtype, embeddings, prediction type) changes, and frees the old pipeline first so two
SD models never sit in memory together.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurender.contract import LoraSpec
from neurender.models.loading import LoadedPipeline, load_pipeline

log = logging.getLogger(__name__)


def _key(
    model: str | Path,
    controlnets: Sequence[tuple[str, str | Path]],
    loras: Sequence[LoraSpec],
    device: str,
    dtype: str,
    config_dir: str | Path | None,
    embeddings: Sequence[str | Path] = (),
    prediction_type: str = "auto",
) -> tuple[Any, ...]:
    def norm(p: str | Path) -> str:
        return str(Path(p).expanduser().resolve())

    return (
        norm(model),
        tuple((kind, norm(p)) for kind, p in controlnets),
        tuple((norm(s.path), float(s.weight)) for s in loras),
        device,
        dtype,
        norm(config_dir) if config_dir is not None else None,
        tuple(norm(p) for p in embeddings),
        prediction_type,
    )


class PipelineCache:
    """Thread-safe holder of at most one ``LoadedPipeline``."""

    def __init__(self, loader: Any = load_pipeline) -> None:
        self._loader = loader
        self._lock = threading.RLock()  # held by get()/free() for a whole load or release
        self._key: tuple[Any, ...] | None = None
        self._loaded: LoadedPipeline | None = None
        self._shown: tuple[tuple[Any, ...], LoadedPipeline] | None = None
        """(key, loaded) as one attribute, replaced whole: describe() reads it without waiting for a load."""
        self.loads = 0  # number of real loads, for tests and /version

    def get(
        self,
        model: str | Path,
        controlnets: Sequence[tuple[str, str | Path]] = (),
        loras: Sequence[LoraSpec] = (),
        device: str = "cpu",
        dtype: str = "float32",
        config_dir: str | Path | None = None,
        embeddings: Sequence[str | Path] = (),
        prediction_type: str = "auto",
    ) -> LoadedPipeline:
        """The pipeline for this selection, loading it (and dropping the previous one) only when it changed."""
        key = _key(model, controlnets, loras, device, dtype, config_dir, embeddings, prediction_type)
        with self._lock:
            if self._loaded is not None and key == self._key:
                return self._loaded
            self.free()
            extra: dict[str, Any] = {}
            if embeddings:
                extra["embeddings"] = list(embeddings)
            if prediction_type != "auto":
                extra["prediction_type"] = prediction_type
            loaded = self._loader(
                model, controlnets, loras, device=device, dtype=dtype, config_dir=config_dir, **extra
            )
            self._key, self._loaded = key, loaded
            self._shown = (key, loaded)
            self.loads += 1
            return loaded

    def free(self) -> None:
        """Drop the loaded pipeline and give its memory back (gc, then the CUDA cache when there is one)."""
        with self._lock:
            had = self._loaded is not None
            self._shown = None
            self._key, self._loaded = None, None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch is a dependency
                pass
            if had:
                log.info("freed the cached pipeline")

    def describe(self) -> dict[str, Any]:
        """What is loaded, for ``GET /version``: ``{"loaded": False}`` or the selection and its description.

        Never waits for a load in progress (``{"loaded": False}`` meanwhile): the handshake must answer at once."""
        shown = self._shown
        if shown is None:
            return {"loaded": False}
        (model, controlnets, loras, device, dtype, _, embeddings, prediction_type), loaded = shown
        return {
            "loaded": True,
            "model": model,
            "controlnets": [{"kind": k, "path": p} for k, p in controlnets],
            "loras": [{"path": p, "weight": w} for p, w in loras],
            "device": device,
            "dtype": dtype,
            "embeddings": list(embeddings),
            "prediction_type": loaded.prediction_type,
            "random_weights": loaded.random_weights,
            "description": loaded.description,
        }
