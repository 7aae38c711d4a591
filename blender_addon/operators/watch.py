"""A modal watcher while a neural render runs: Esc cancels it; the panel and status bar follow its progress."""

import bpy

from .. import session
from .. import neurender_contract as contract


def start_watch(op, context):
    """Start the modal watcher in the UI; in background mode there is nothing to watch."""
    if bpy.app.background or context.window is None:
        return {"FINISHED"}
    bpy.ops.neurender.watch("INVOKE_DEFAULT")
    return {"FINISHED"}


class NEURENDER_OT_watch(bpy.types.Operator):
    bl_idname = "neurender.watch"
    bl_label = "Watch Neural Render"
    bl_description = "Follow the running neural render in the panel and the status bar; Esc cancels it"
    bl_options = {"INTERNAL"}

    _timer = None

    def invoke(self, context, event):
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        status = context.window_manager.neurender
        if event.type == "ESC" and event.value == "PRESS":
            session.cancel_job()
            return {"PASS_THROUGH"}
        if event.type == "TIMER":
            session.pump()
            if status.job_state in contract.JOB_FINAL_STATES or (not status.job_id and status.error):
                self._finish(context)
                if status.error:
                    self.report({"ERROR"}, status.error)
                else:
                    self.report({"INFO"}, status.message)
                return {"FINISHED"}
        return {"PASS_THROUGH"}

    def _finish(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)
