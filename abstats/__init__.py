"""abstats: statistical experiment analysis and auto-promotion for ML models in production."""

__version__ = "0.1.0"
