"""rlhf-vs-steering: how much human feedback each alignment method needs, and how far its behavior generalizes.

The `study` package holds the orchestration: configuration, the model organism, model loading, behavior targets,
the labeler, evaluation, the runner and its results store, and the CLI (`study --help`).
"""

__version__ = "0.1.0"
