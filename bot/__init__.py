"""carebot: answers a brand's customers on social platforms."""

__version__ = "0.1.0"
