"""NV-MRI: the point-spread function from the locked-detuning stack, and dark spins localized from DEER maps (docs/physics.md section 2.6)."""
