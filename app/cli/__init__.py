"""The ``edgewise`` commands, one module per command group; ``main`` is the entry point."""
