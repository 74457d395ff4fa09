"""The stages: one module per stage, each with ``register(ctx)``; feature packages (``cdc``,
``edge``) for stages that come with support code. May import core, services, models, adapters
and tables; nothing below imports a stage."""
