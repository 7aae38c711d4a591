"""Reading and validating pass folders (manifest.json + multilayer EXR per frame)."""
