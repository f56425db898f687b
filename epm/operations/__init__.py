"""The long operations epm offers; importing this package registers them with the job system."""

from . import canvas, demo, program, research  # noqa: F401
