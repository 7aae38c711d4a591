"""neurender: temporally consistent neural rendering of Blender animations. Registration only."""

import bpy

from . import handlers, operators, panels, preferences, properties, session

_classes = (*preferences.classes, *properties.classes, *operators.classes, *panels.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register_props()
    handlers.register()
    if not bpy.app.timers.is_registered(session.pump):
        bpy.app.timers.register(session.pump, first_interval=session.TIMER_INTERVAL, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(session.pump):
        bpy.app.timers.unregister(session.pump)
    handlers.unregister()
    session.shutdown()
    properties.unregister_props()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
