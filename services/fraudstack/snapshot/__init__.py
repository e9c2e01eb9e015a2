"""``fraudstack snapshot``: the Kafka topics to the Parquet offline store, exactly once.

:mod:`.consumer` holds the delivery logic, :mod:`.records` the schemas, :mod:`.online_features`
the periodic snapshots of the online feature values, :mod:`.metrics` what Prometheus scrapes.
"""
