"""Deflicker engine: exact-motion warping, PatchMatch fallback, in-iteration and post deflicker."""
