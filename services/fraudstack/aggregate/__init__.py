"""Aggregation: keep every customer's and terminal's features fresh in the online store."""
