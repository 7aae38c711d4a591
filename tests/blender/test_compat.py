"""compat.py under the Blender version of this environment (run the suite with .venv-blender and .venv-blender5)."""

from importlib.metadata import version


def test_compat_functions_on_this_blender(run_scenario):
    r = run_scenario("compat")
    major, minor = (int(x) for x in version("bpy").split(".")[:2])
    assert r["version"] == [major, minor] and r["is_5x"] is (major >= 5)
    assert r["formats"] == ["PNG", ["OPEN_EXR_MULTILAYER", "16", "ZIP", True], ["PNG", False],
                            ["FFMPEG", "MPEG4", "H264"], "OPEN_EXR"]
    assert r["compositor"] == "CompositorNodeTree"
    assert r["strips"] == [["c", 3]]
    assert r["n_fcurves"] == 3 and r["fcurves"] == ["LINEAR"]
    assert abs(r["x_at_3"] - 2.0) < 1e-6  # linear keys: exactly halfway
    assert r["index_prefix"] == ("ViewLayer.Object Index" if major >= 5 else "ViewLayer.IndexOB")
