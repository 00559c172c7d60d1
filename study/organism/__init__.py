"""The model organism: a generated world with an exact oracle, and a small Llama pretrained on it.

    from study.organism import World, WorldConfig, Oracle
"""

from study.organism.oracle import Oracle
from study.organism.world import BEHAVIORS, FORMATS, World, WorldConfig

__all__ = ["BEHAVIORS", "FORMATS", "Oracle", "World", "WorldConfig"]
