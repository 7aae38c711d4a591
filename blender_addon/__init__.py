"""neurender: temporally consistent neural rendering of Blender animations. Registration only."""

import bpy

from . import handlers, jobs, jobs_panel, operators, panels, preferences, properties, session

_classes = (*preferences.classes, *properties.classes, *jobs.classes, *operators.classes, *panels.classes,
            *jobs_panel.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register_props()
    jobs.register_props()
    handlers.register()
    if not bpy.app.timers.is_registered(session.pump):
        bpy.app.timers.register(session.pump, first_interval=session.TIMER_INTERVAL, persistent=True)
    handlers.reattach_soon()  # re-enabled or restarted: follow the file's running jobs again


def unregister():
    if bpy.app.timers.is_registered(session.pump):
        bpy.app.timers.unregister(session.pump)
    handlers.unregister()
    session.shutdown()
    jobs.unregister_props()
    properties.unregister_props()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
