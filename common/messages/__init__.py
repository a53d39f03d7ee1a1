"""Argument and result dataclasses, one module per RPC domain.

Each type is a frozen dataclass with a one-line doc per field. Fields that travel as file
descriptors beside the body carry ``metadata={"wire": False}``; secret fields carry
``repr=False`` so that they never reach a log.
"""
