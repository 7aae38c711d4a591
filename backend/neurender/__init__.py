"""neurender backend: temporally consistent neural rendering of Blender CGI passes.

Nothing is imported or configured here at import time; see ``neurender.cli`` and ``neurender.runner``.
"""

__version__ = "0.1.0"
