"""fraudstack: real-time fraud scoring for card payments."""

__version__ = "0.1.0"
