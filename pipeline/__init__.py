"""lstm-forecast-pipeline core package."""
__version__ = "0.1.0"
