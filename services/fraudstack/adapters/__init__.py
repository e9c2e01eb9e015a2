"""Adapters: the only code that talks to Kafka, Redis, Parquet files and the model registry."""
