"""course_lib: the shared library of the deep generative models course.

The names every notebook uses are importable from here; everything else lives in one
module per concept (see ``docs/ARCHITECTURE.md``).
"""
from course_lib.runtime import budget, device_summary, get_device, is_fast, seed_everything

__version__ = "0.1.0"

__all__ = ["budget", "device_summary", "get_device", "is_fast", "seed_everything", "__version__"]
