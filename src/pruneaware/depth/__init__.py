"""Depth pruning: find removable blocks, score them, remove them, and compact Hugging Face layer lists."""

from pruneaware.depth.blocks import Block, SkippedBlock, find_blocks, remove_block, skipped_names
from pruneaware.depth.compact import compact
from pruneaware.depth.importance import BlockGates, block_influence

__all__ = ["Block", "BlockGates", "SkippedBlock", "block_influence", "compact", "find_blocks", "remove_block", "skipped_names"]
