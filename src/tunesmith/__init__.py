"""tunesmith: decide, prepare data, train, evaluate, deploy and account for a fine-tune."""

__version__ = "0.1.0"
