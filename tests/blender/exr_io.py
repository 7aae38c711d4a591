"""Reading pass EXRs in tests (OpenEXR 3.x)."""

import numpy as np
import OpenEXR


def channels(path: str) -> dict:
    """All channels of the first part as float arrays; RGBA groups are split into ``name.R`` ... ``name.A``."""
    out = {}
    with OpenEXR.File(path) as f:
        for name, ch in f.parts[0].channels.items():
            px = np.asarray(ch.pixels, dtype=np.float64)
            if px.ndim == 3:
                for i, c in enumerate("RGBA"[: px.shape[2]]):
                    out[f"{name}.{c}"] = px[..., i]
            else:
                out[name] = px
    return out
