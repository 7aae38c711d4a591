"""Reading pass EXRs in tests (OpenEXR 3.x): Blender 4.5 writes one part, 5.0 one part per pass."""

import numpy as np
import OpenEXR


def channels(path: str) -> dict:
    """All channels of all parts as float arrays; RGBA groups are split into ``name.R`` ... ``name.A``."""
    out = {}
    with OpenEXR.File(path) as f:
        for part in f.parts:
            for name, ch in part.channels.items():
                px = np.asarray(ch.pixels, dtype=np.float64)
                if px.ndim == 3:
                    for i, c in enumerate("RGBA"[: px.shape[2]]):
                        out[f"{name}.{c}"] = px[..., i]
                else:
                    out[name] = px
    return out


def part_count(path: str) -> int:
    with OpenEXR.File(path) as f:
        return len(f.parts)
