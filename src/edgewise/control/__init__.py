"""The fleet control plane."""

__all__: list[str] = []
