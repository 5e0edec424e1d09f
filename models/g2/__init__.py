"""nvscope.models.g2."""
