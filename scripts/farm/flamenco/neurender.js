// SPDX-License-Identifier: GPL-3.0-or-later
//
// Flamenco custom job type "neurender": Blender writes the shot's passes, then `neurender` renders the shot in
// chunks that share one set of anchors, and a last task merges the chunk overlaps into the final frames.
//
// Install: copy this file into the Manager's `scripts/` folder (next to flamenco-manager) and restart the Manager.
// Workers that run the neurender tasks must list the task type in flamenco-worker.yaml:
//     task_types: [blender, ffmpeg, file-management, misc, neurender]
// and have `neurender` on their PATH (or set "neurender_exe"). All workers must see the output folder at the same
// path (Flamenco's shared storage). See scripts/farm/README.md.
//
// Task graph:  passes (blender) -> anchors (neurender) -> render-A-B ... (neurender, in parallel) -> merge (neurender)
// Every neurender task is idempotent (finished frames are skipped, outputs are atomic), so a requeued task resumes.

const JOB_TYPE = {
    label: "neurender (neural render)",
    description: "Render passes in Blender, then a temporally consistent neural rendering of them in chunks",
    settings: [
        { key: "frames", type: "string", required: true,
          eval: "f'{C.scene.frame_start}-{C.scene.frame_end}'",
          evalInfo: { showLinkButton: true, description: "Scene frame range" },
          description: "Frame range to render, e.g. '1-240' (one range: chunks overlap and share anchors)" },
        { key: "chunk_size", type: "int32", default: 24, propargs: { min: 1, max: 1000 }, visible: "submission",
          description: "Frames per neurender task (one GPU each); at least twice the overlap" },
        { key: "overlap", type: "int32", default: 4, propargs: { min: 0, max: 64 }, visible: "submission",
          description: "Frames rendered by both neighbouring chunks and cross-faded so no seam shows" },
        { key: "anchor_count", type: "int32", default: 3, propargs: { min: 1, max: 16 }, visible: "submission",
          description: "Anchor frames computed once and shared by every chunk" },
        { key: "render_output_root", type: "string", subtype: "dir_path", required: true, visible: "submission",
          description: "Base folder; the job writes <root>/<job name>/passes and <root>/<job name>/frames" },
        { key: "look", type: "string", subtype: "file_path", required: false, visible: "submission",
          description: "Optional look file (neurender look save): model, prompt, seed, anchors of an earlier shot" },
        { key: "settings_file", type: "string", subtype: "file_path", required: false, visible: "submission",
          description: "Optional RenderSettings JSON (model, ControlNets, prompt, ...) for neurender" },
        { key: "prompt", type: "string", required: false, visible: "submission",
          eval: "C.scene.neurender.prompt if hasattr(C.scene, 'neurender') else ''",
          description: "Prompt (overrides the look/settings file when set)" },
        { key: "neurender_exe", type: "string", default: "neurender", visible: "submission",
          description: "The neurender command on the workers" },
        { key: "blendfile", type: "string", required: true, description: "Path of the Blend file", visible: "web" },
    ],
};

function compileJob(job) {
    const settings = job.settings;
    const range = parseRange(settings.frames);
    const root = path.join(settings.render_output_root, job.name);
    const passDir = path.join(root, "passes");
    const outDir = path.join(root, "frames");
    const anchorsDir = path.join(outDir, "anchors");
    const common = neurenderArgs(settings);

    const passes = author.Task("passes", "blender");
    passes.addCommand(author.Command("blender-render", {
        exe: "{blender}",
        exeArgs: "{blenderArgs}",
        argsBefore: [],
        blendfile: settings.blendfile,
        // scripts/farm/write_passes.py must be reachable by the workers, e.g. copied next to the blend file.
        args: ["--python", path.join(path.dirname(settings.blendfile), "write_passes.py"), "--",
               "--out", passDir, "--frames", `${range.start}-${range.end}`],
    }));
    job.addTask(passes);

    let anchors = null;
    if (!settings.look) {
        anchors = author.Task("anchors", "neurender");
        anchors.addCommand(author.Command("exec", {
            exe: settings.neurender_exe,
            args: ["anchors", passDir, "--out", anchorsDir, "--count", `${settings.anchor_count}`,
                   "--frames", `${range.start}-${range.end}`, "--progress", "json"].concat(common),
        }));
        anchors.addDependency(passes);
        job.addTask(anchors);
    }

    const merge = author.Task("merge", "neurender");
    merge.addCommand(author.Command("exec", {
        exe: settings.neurender_exe,
        args: ["merge", outDir, "--final", "--progress", "json"],
    }));

    for (const chunk of chunks(range, settings.chunk_size, settings.overlap)) {
        const task = author.Task(`render-${chunk.start}-${chunk.end}`, "neurender");
        const args = ["render", passDir, "--out", outDir, "--frames", `${chunk.start}-${chunk.end}`,
                      "--overlap", `${settings.overlap}`, "--progress", "json"];
        if (!settings.look) {
            args.push("--anchors", anchorsDir);
        }
        task.addCommand(author.Command("exec", { exe: settings.neurender_exe, args: args.concat(common) }));
        task.addDependency(anchors || passes);
        merge.addDependency(task);
        job.addTask(task);
    }
    job.addTask(merge);
}

// The settings every neurender command shares (look, settings file, prompt).
function neurenderArgs(settings) {
    const args = [];
    if (settings.look) {
        args.push("--look", settings.look);
    }
    if (settings.settings_file) {
        args.push("--settings", settings.settings_file);
    }
    if (settings.prompt) {
        args.push("--prompt", settings.prompt);
    }
    return args;
}

function parseRange(frames) {
    const m = `${frames}`.trim().match(/^(-?\d+)\s*(?:-\s*(-?\d+))?$/);
    if (!m) {
        throw `neurender renders one frame range like '1-240', not "${frames}"`;
    }
    const start = parseInt(m[1]);
    const end = m[2] === undefined ? start : parseInt(m[2]);
    if (end < start) {
        throw `frame range "${frames}" is empty`;
    }
    return { start: start, end: end };
}

// Chunks of `size` core frames; a short rest (< 2 * overlap frames) joins the chunk before it, as `neurender farm`
// plans them (backend/neurender/farm/chunks.py: plan_chunks).
function chunks(range, size, overlap) {
    if (overlap > 0 && size < 2 * overlap) {
        throw `chunk size ${size} must be at least twice the overlap (${overlap})`;
    }
    const out = [];
    for (let s = range.start; s <= range.end; s += size) {
        out.push({ start: s, end: Math.min(s + size - 1, range.end) });
    }
    const last = out[out.length - 1];
    if (out.length > 1 && last.end - last.start + 1 < Math.max(2 * overlap, 1)) {
        out.pop();
        out[out.length - 1].end = last.end;
    }
    return out;
}
