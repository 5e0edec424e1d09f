"""nvscope.rt."""
