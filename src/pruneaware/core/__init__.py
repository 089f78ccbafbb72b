"""The core: the Pruner as a driver over stages, the stage protocol, the shared context and the stage registry."""

from pruneaware.core.context import Context
from pruneaware.core.registry import STAGES, register_stage
from pruneaware.core.stage import Stage

__all__ = ["STAGES", "Context", "Stage", "register_stage"]
