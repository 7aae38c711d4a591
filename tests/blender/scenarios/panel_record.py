"""A recording stand-in for ``UILayout`` (bpy has no UI in background mode): draw a panel, get what it showed.

Every item is a dict: {"what": "label"|"prop"|"operator"|"progress", "text", "name", "alert"}; ``alert`` is True
inside a box or row whose ``alert`` was set (how Blender draws a message in red).
"""

import types


class Layout:
    def __init__(self, record, alert=False):
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "_alert", alert)

    def __setattr__(self, name, value):
        if name == "alert":
            object.__setattr__(self, "_alert", bool(value))

    def __getattr__(self, name):
        return None

    def _child(self, *a, **k):
        return Layout(self._record, self._alert)

    row = column = box = split = column_flow = grid_flow = _child

    def prop(self, data, name, **kw):
        self._record.append({"what": "prop", "name": name, "text": kw.get("text"), "alert": self._alert,
                             "data": data})
        return None

    def operator(self, idname, **kw):
        self._record.append({"what": "operator", "name": idname, "text": kw.get("text"), "alert": self._alert})
        return types.SimpleNamespace()

    def label(self, **kw):
        self._record.append({"what": "label", "text": kw.get("text", ""), "alert": self._alert,
                             "icon": kw.get("icon", "NONE")})

    def progress(self, **kw):
        self._record.append({"what": "progress", "text": kw.get("text", ""), "factor": kw.get("factor"),
                             "alert": self._alert})

    def separator(self, **kw):
        pass


def draw_all(mod, bpy):
    """Draw every panel of the add-on for the current scene; returns the recorded items."""
    record = []
    ctx = types.SimpleNamespace(scene=bpy.context.scene, window_manager=bpy.context.window_manager,
                                preferences=bpy.context.preferences, region=None)
    for cls in mod.panels.classes:
        cls.draw(types.SimpleNamespace(layout=Layout(record)), ctx)
    return record


def texts(record, alert=None):
    """The labels' text joined into one string per run of consecutive labels (wrapped lines joined again)."""
    out, run = [], []
    for item in record + [{"what": "end"}]:
        if item["what"] == "label" and (alert is None or item["alert"] == alert):
            run.append(item["text"])
            continue
        if run:
            out.append(" ".join(run))
            run = []
    return out


def plain(record):
    """The record without the live RNA objects (JSON for the test process)."""
    return [{k: v for k, v in item.items() if k != "data"} for item in record]
