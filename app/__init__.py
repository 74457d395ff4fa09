"""edgewise.app: ``core`` and ``services`` (the floor), ``adapters``, and ``run``, ``cli`` and
``bench`` (the roof)."""
