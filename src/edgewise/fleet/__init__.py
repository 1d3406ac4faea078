"""A node's membership of a fleet: its persisted identity and the node agent."""

__all__: list[str] = []
