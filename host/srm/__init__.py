"""host.srm: the antibunching super-resolution pipeline (on-line g2, run-end maps, the g2 CLI)."""
