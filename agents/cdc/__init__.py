"""PostgreSQL change data capture: the ``cdc`` and ``cdc_transform`` stages and their support
(pgoutput decoder, Debezium envelope, ack tracking, snapshot, state, loading, training)."""
