"""nvscope.models."""
