"""Framework integrations built on the public API (the Hugging Face Trainer callback, ...)."""
