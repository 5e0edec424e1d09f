"""host.vqns: the noise-spectroscopy pipeline (the adaptive loop and the vqns CLI)."""
