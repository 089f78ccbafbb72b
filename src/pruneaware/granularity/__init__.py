"""Granularities: what is removed together (single weights, blocks, N:M groups) and how a target is shared among layers."""

from pruneaware.granularity.kinds import NM, SCOPES, Block, Element, Granularity, input_major

__all__ = ["NM", "SCOPES", "Block", "Element", "Granularity", "input_major"]
