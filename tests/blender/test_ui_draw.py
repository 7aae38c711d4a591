"""The panels and preferences draw only real properties and operators, including progress and the error box."""


def test_panels_and_preferences_draw(run_scenario):
    r = run_scenario("ui_draw")
    assert r["problems"] == []
    calls = r["calls"]
    for name in ("neurender.render_frame", "neurender.render_animation", "neurender.cancel",
                 "neurender.open_output", "neurender.connect", "prompt", "seed", "steps", "scheduler",
                 "consistency", "deflicker_steps", "render_hook", "weight", "backend_url", "sd_model",
                 "controlnet_depth", "progress", "keyframe_block", "img2img_strength", "pnp_features",
                 "deflicker_space", "settings:keyframes:0.5", "embeddings_dir", "prediction_type",
                 "models:['/models/embeddings']:v_prediction:True", "fit_within", "deflicker_preset", "path",
                 "neurender.lora_add", "reference_image", "look_file", "neurender.look_save", "neurender.look_apply",
                 "neurender.show_controls", "neurender.free_vram", "neurender.add_suggested_controls",
                 "neurender.apply_preset", "device", "dtype", "motion_module", "use_motion_module",
                 "context_length", "context_overlap", "motion-off:", "motion:/models/mm_sd_v15_v2.ckpt:8:4:True"):
        assert name in calls, name
    # a long error (160 characters) wraps into several sidebar lines, every word kept; Copy Message beside it
    error = [c[len("label:"):] for c in calls if c.startswith("label:")]
    start = next(i for i, c in enumerate(error) if c.startswith("The backend refused a setting"))
    lines = error[start:start + 4]
    assert " ".join(lines).startswith("The backend refused a setting in the Neural Render panel: steps must be "
                                      "within 1..150, and the deflicker steps 4, 9 and 14")
    assert len(lines[0]) <= 48 and all(len(line) <= 48 for line in lines)
    assert "neurender.copy_message" in calls and "neurender.open_log" in calls
