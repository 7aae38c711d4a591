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
                 "models:['/models/embeddings']:v_prediction:True"):
        assert name in calls, name
    assert "label:The backend refused the render settings: steps must be within 1..150" in calls
