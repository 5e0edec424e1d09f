"""nvscope.host."""
