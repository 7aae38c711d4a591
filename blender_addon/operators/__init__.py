"""One operator per module; ``classes`` is registered in order by the package's ``__init__``."""

from .cancel import NEURENDER_OT_cancel
from .connect import NEURENDER_OT_connect
from .control_units import NEURENDER_OT_control_add, NEURENDER_OT_control_remove
from .free_vram import NEURENDER_OT_free_vram
from .jobs import NEURENDER_OT_job_cancel, NEURENDER_OT_job_import, NEURENDER_OT_job_open_folder
from .looks_ops import NEURENDER_OT_look_apply, NEURENDER_OT_look_save
from .loras import NEURENDER_OT_lora_add, NEURENDER_OT_lora_remove
from .messages_ops import NEURENDER_OT_copy_message, NEURENDER_OT_open_log
from .open_output import NEURENDER_OT_open_output
from .presets import NEURENDER_OT_add_suggested_controls, NEURENDER_OT_apply_preset
from .render_animation import NEURENDER_OT_render_animation
from .render_frame import NEURENDER_OT_render_frame
from .show_images import NEURENDER_OT_show_controls, NEURENDER_OT_show_preview
from .watch import NEURENDER_OT_watch

classes = (
    NEURENDER_OT_connect,
    NEURENDER_OT_render_frame,
    NEURENDER_OT_render_animation,
    NEURENDER_OT_cancel,
    NEURENDER_OT_open_output,
    NEURENDER_OT_watch,
    NEURENDER_OT_control_add,
    NEURENDER_OT_control_remove,
    # what the artist sees (issue 11)
    NEURENDER_OT_copy_message,
    NEURENDER_OT_open_log,
    NEURENDER_OT_free_vram,
    NEURENDER_OT_apply_preset,
    NEURENDER_OT_add_suggested_controls,
    NEURENDER_OT_lora_add,
    NEURENDER_OT_lora_remove,
    NEURENDER_OT_look_save,
    NEURENDER_OT_look_apply,
    NEURENDER_OT_show_preview,
    NEURENDER_OT_show_controls,
    NEURENDER_OT_job_cancel,
    NEURENDER_OT_job_import,
    NEURENDER_OT_job_open_folder,
)
