"""Sinks into PostgreSQL: the ``sink_predictions`` and ``sink_samples`` stages (one module
each) and their support: the tables and their SQL, the rows of a batch, the writer that
keeps a connection, and the loop both stages run."""
