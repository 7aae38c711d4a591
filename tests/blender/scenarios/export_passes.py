"""Scenario: build the known-motion scene and write its pass folder through the add-on's pass export."""

import sys

import common

config, mod = common.start(sys.argv[1])
import scenes  # noqa: E402  (needs bpy and the installed add-on)

scene = scenes.build(frames=config.get("frames", 5))
scene.neurender.output_dir = config["out"]
manifest = mod.pass_export.export_passes(scene, scene.frame_start, scene.frame_end)
common.finish({
    "pass_dir": mod.pass_export.pass_dir(scene),
    "generator": manifest.generator,
    "render_filepath": scene.render.filepath,
    "file_format": scene.render.image_settings.file_format,
    "cube_start": scenes.CUBE_START, "cube_step": scenes.CUBE_STEP,
    "sphere_center": scenes.SPHERE_CENTER, "sphere_radius": scenes.SPHERE_RADIUS,
})
