"""The temporary pass scene leaves nothing behind: no render engine (with its depsgraph) survives its removal.

The pass-only render uses persistent data, so Cycles keeps its engine and a depsgraph registered with
``bpy.data`` after the render. When the temporary scene was removed with that engine alive, the depsgraph pointed at
freed memory and the next relations update (e.g. the sequencer strip of the finished job) crashed bpy 5.0.1
intermittently (exit -11 in test_errors_cancel, about 1 run in 20 under load; gdb: DEG_relations_tag_update ->
graph_id_tag_update with a garbage ID). The live engine is the deterministic symptom checked here.
"""


def test_no_render_engine_outlives_the_pass_scene(run_scenario):
    r = run_scenario("pass_scene_cleanup")
    assert r["engines"] == [[], []], r["engines"]
    assert r["scenes"] == ["Scene"]
