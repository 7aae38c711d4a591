"""Deflicker engine: exact-motion warping, PatchMatch fallback, in-iteration and post deflicker (issue #5).

Modules (one idea each; import them directly, this package imports nothing at import time):

* ``correspondence`` -- ``Correspondence(flow, valid)``, chaining (``compose``) and resizing (render/latent size);
* ``warp`` -- backward warping with bilinear ``grid_sample``;
* ``vector_pass`` -- adjacent-frame flows from Blender's Vector pass;
* ``reprojection`` -- far-frame flows from depth + cameras;
* ``visibility`` -- occlusion: depth test, forward/backward consistency, object index;
* ``motion`` -- ``MotionSource`` / ``correspondences(...)``: exact motion first, estimated flow (``estimated_flow``:
  OpenCV DIS) otherwise, PatchMatch (``patchmatch``) on request;
* ``robust`` -- the default engine: colour compensation along the motion + robust fusion (plan once, apply many times);
* ``blend`` -- the plain temporal blend along correspondences (the ``average`` engine);
* ``enhance`` -- contrast/sharpness x1.1 (DiffSynth) and colour statistics compensation;
* ``sequence`` -- ``Deflicker`` (blend + corrections) and ``deflicker_frames`` for finished frames;
* ``hook`` -- ``DeflickerHook``, the in-iteration deflicker for ``LockstepSampler`` (DiffSynth Sec. 3.3);
* ``render_glue`` -- hooks and post pass from typed ``DeflickerOptions`` for the job plan;
* ``sequence_io`` / ``cli_deflicker`` -- ``neurender deflicker FRAMES_DIR --out OUT_DIR [--passes PASS_DIR] ...``.
"""
