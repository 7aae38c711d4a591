"""Render-farm scale (issue #7): shared anchors, chunks with blended overlaps, Ray farm, looks.

Modules: ``anchors`` (the shot's anchor trajectory, computed once), ``chunks`` (plan and render one chunk),
``merge`` (blend overlaps into the final frames), ``ray_farm`` (chunks as Ray tasks), ``looks`` (reusable looks),
``cli_farm`` (the ``anchors``/``farm``/``merge``/``look`` sub-commands).
"""
