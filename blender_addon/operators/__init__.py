"""One operator per module; ``classes`` is registered in order by the package's ``__init__``."""

from .cancel import NEURENDER_OT_cancel
from .connect import NEURENDER_OT_connect
from .control_units import NEURENDER_OT_control_add, NEURENDER_OT_control_remove
from .open_output import NEURENDER_OT_open_output
from .render_animation import NEURENDER_OT_render_animation
from .render_frame import NEURENDER_OT_render_frame
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
)
