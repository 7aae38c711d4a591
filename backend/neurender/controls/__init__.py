"""Control images derived from exact render passes (no estimators)."""
