"""Ingestion: the HTTP API that puts transactions on Kafka, and the Parquet replay."""
