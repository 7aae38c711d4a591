"""What the panel tells the artist before rendering, in real Blender (4.5 and 5.0): every property and operator
described, properties derived from the contract, the defaults an artist expects, the advice, presets, looks and
the control images."""

import os


def test_panel_before_rendering(run_scenario, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    r = run_scenario("artist_panel", models=str(models))
    assert r["undescribed"] == [], r["undescribed"]
    assert "neurender.free_vram" in r["operators"] and "neurender.show_controls" in r["operators"]
    # every RenderSettings field is a property of the shot, or deliberately filled by the add-on itself
    assert r["fields_without_property"] == []
    assert r["filled_by_addon"] == ["controlnets", "embeddings", "frames", "loras", "model", "motion_module",
                                   "reference_image"]
    # a field added to the contract gets a generic property at once (so it reaches the backend), but its label and
    # tooltip are owed: blender_addon/properties.py _field_props (see /work/coord/NOTES.md)
    assert r["auto_fields"] == [], f"RenderSettings fields without an entry in properties._field_props: {r['auto_fields']}"
    assert r["defaults_differ"] == []  # the contract's defaults, not copies that drift
    assert (r["device"], r["dtype"]) == ("auto", "auto")

    assert r["fit_within"] == 768
    assert r["sizes"] == {"1920x1080@100": [768, 432], "100x60@100": [96, 56], "1080x1920@50": [432, 768],
                          "64x48@100": [64, 48]}

    # no checkpoint: RANDOM WEIGHTS in red, before anything is submitted
    assert r["no_checkpoint_warnings"][0] == "ERROR"
    assert any("RANDOM WEIGHTS" in t and "noise" in t for t in r["no_checkpoint_red"]), r["no_checkpoint_red"]
    # a real checkpoint and no ControlNet: the warning, with the one-click fix beside it
    assert any("No ControlNet: the output ignores your scene" in t for t in r["no_controlnet_texts"])
    assert not any("RANDOM" in t for t in r["no_controlnet_red"])
    assert r["fix_button"] == ["neurender.add_suggested_controls"] and r["add_result"] == ["FINISHED"]
    models_ = str(models)
    assert r["units"] == [
        {"kind": "depth", "weight": 1.0, "start": 0.0, "end": 1.0, "model": os.path.join(models_, "cn_depth.safetensors")},
        {"kind": "edges", "weight": 0.6, "start": 0.0, "end": 0.8, "model": os.path.join(models_, "cn_edges.safetensors")}]
    assert not any("No ControlNet" in t for t in r["after_fix_warnings"])
    assert r["units_after_second_click"] == 2 and r["added_normal"] == ["normal", 0.5]
    assert r["settings_units"] == [["depth", 1.0, 1.0], ["edges", 0.6, 0.8], ["normal", 0.5, 1.0]]

    plans = r["deflicker_plans"]
    assert plans["OFF"] == [[], False]
    assert len(plans["STANDARD"][0]) == 4 and plans["STANDARD"][1] is True
    assert len(plans["STRONG"][0]) > 4 and plans["STRONG"][1] is True
    assert all(0 < s < 20 for s in plans["STRONG"][0])
    assert r["custom_after_typing"] == "CUSTOM" and plans["CUSTOM"] == [[2, 5], False]
    assert "25" in r["bad_custom_step"]  # a raw step past the last one is refused, never dropped silently

    assert {"FAST", "DRAFT", "FINAL"} <= set(r["presets"])
    assert r["fast"] == [4, "lcm", "OFF"] and r["final"] == [30, "dpmpp_2m"]

    assert r["look_save"] == ["FINISHED"] and r["look_file"].endswith(".nrlook") and os.path.isfile(r["look_file"])
    after = r["after_look"]
    assert after["prompt"] == "a brass owl" and after["seed"] == 77
    assert after["loras"] == [[os.path.join(models_, "style.safetensors"), 0.7]]
    assert after["units"] == ["depth", "edges", "normal"] and after["reference_exists"]
    assert after["reference"].endswith("reference.png")

    assert r["show_controls"] == ["FINISHED"]
    assert r["control_images"] == {"Neural Render depth": [16, 12], "Neural Render edges": [16, 12]}
    assert "No control images for frame 2" in r["no_controls"]
    w, h, same_scale = r["strip_covers"]
    assert w >= 100 - 1e-3 and h >= 60 - 1e-3 and same_scale  # fills the 100x60 canvas, aspect kept
