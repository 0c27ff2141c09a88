"""finsent: sentiment of financial news with LoRA-tuned encoders."""

__version__ = "0.1.0"
