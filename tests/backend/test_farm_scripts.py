"""The farm-manager files: the Flamenco job type compiles to the right task graph (run in node with a stand-in of
Flamenco's job-compiler API), and the Deadline/OpenCue/Blender scripts parse."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from neurender.farm.chunks import plan_chunks

REPO = Path(__file__).resolve().parents[2]
FARM = REPO / "scripts" / "farm"

HARNESS = r"""
const fs = require("fs");
const tasks = [];
global.print = () => {};
global.path = {
  join: (...p) => p.join("/").replace(/\/+/g, "/"),
  dirname: (p) => p.substring(0, p.lastIndexOf("/")),
};
global.author = {
  Task: (name, type) => {
    const t = { name, type, commands: [], deps: [] };
    t.addCommand = (c) => t.commands.push(c);
    t.addDependency = (d) => t.deps.push(d.name);
    return t;
  },
  Command: (name, params) => ({ name, params }),
};
eval(fs.readFileSync(process.argv[2], "utf8") + "\nglobal.compileJob = compileJob; global.JOB_TYPE = JOB_TYPE;");
const job = { name: "sh010", settings: JSON.parse(process.argv[3]), addTask: (t) => tasks.push(t) };
try {
  compileJob(job);
  console.log(JSON.stringify({ tasks: tasks.map(({ name, type, commands, deps }) => ({ name, type, commands, deps })),
                               keys: JOB_TYPE.settings.map((s) => s.key) }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
}
"""


def _compile(tmp_path, **settings):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    base = {"frames": "1-50", "chunk_size": 12, "overlap": 3, "anchor_count": 3, "render_output_root": "/farm",
            "blendfile": "/show/sh010.blend", "neurender_exe": "neurender", "look": "", "settings_file": "/show/s.json",
            "prompt": ""}
    base.update(settings)
    out = subprocess.run([node, str(harness), str(FARM / "flamenco" / "neurender.js"), json.dumps(base)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_flamenco_job_type_builds_passes_anchors_chunks_merge(tmp_path):
    result = _compile(tmp_path)
    tasks = {t["name"]: t for t in result["tasks"]}
    plan = plan_chunks(range(1, 51), (1, 50), 12, 3)
    renders = [f"render-{c.core[0]}-{c.core[1]}" for c in plan]
    assert list(tasks) == ["passes", "anchors", *renders, "merge"]  # the same chunks as `neurender farm` plans
    assert tasks["passes"]["type"] == "blender" and tasks["passes"]["commands"][0]["name"] == "blender-render"
    assert "/farm/sh010/passes" in tasks["passes"]["commands"][0]["params"]["args"]
    assert tasks["anchors"]["deps"] == ["passes"]
    for name in renders:
        args = tasks[name]["commands"][0]["params"]["args"]
        assert tasks[name]["deps"] == ["anchors"] and tasks[name]["type"] == "neurender"
        assert args[:4] == ["render", "/farm/sh010/passes", "--out", "/farm/sh010/frames"]
        assert args[args.index("--frames") + 1] == name[len("render-"):]
        assert args[args.index("--overlap") + 1] == "3" and "--anchors" in args
        assert args[args.index("--settings") + 1] == "/show/s.json"
    assert tasks["merge"]["deps"] == renders and "--final" in tasks["merge"]["commands"][0]["params"]["args"]


def test_flamenco_job_type_with_a_look_and_bad_input(tmp_path):
    result = _compile(tmp_path, look="/show/looks/toon.nrlook")
    names = [t["name"] for t in result["tasks"]]
    assert "anchors" not in names  # the look brings its anchors
    render = result["tasks"][1]
    assert render["deps"] == ["passes"] and "--look" in render["commands"][0]["params"]["args"]
    assert "twice the overlap" in _compile(tmp_path, chunk_size=4, overlap=3)["error"]
    assert "one frame range" in _compile(tmp_path, frames="1-10, 20-30")["error"]


def test_deadline_opencue_and_blender_scripts_parse():
    subprocess.run(["bash", "-n", str(FARM / "deadline" / "submit_neurender.sh")], check=True)
    for script in (FARM / "opencue" / "neurender_outline.py", FARM / "write_passes.py"):
        compile(script.read_text(), str(script), "exec")  # parses; nothing written next to it
    text = (FARM / "deadline" / "submit_neurender.sh").read_text()
    assert "<STARTFRAME>-<ENDFRAME>" in text and "JobDependencies" in text
    assert "#FRAME_START#-#FRAME_END#" in (FARM / "opencue" / "neurender_outline.py").read_text()
