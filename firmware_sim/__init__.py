"""nvscope.firmware_sim."""
