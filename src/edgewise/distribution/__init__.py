"""Signed distribution of models: the fleet's TUF repository and a node's updater."""

__all__: list[str] = []
