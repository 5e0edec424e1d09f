"""NV-MRI: the point-spread function from the locked-detuning stack, and dark spins localized from DEER maps (docs/physics.md section 2.6).

Public API: `scan_data` (MriScan, MriInputError, scan_from_arrays, load_mri_npz) and `localize` (localize,
Localization, SpinEstimate, LayerEstimate); psf, spins and layer hold the parts.
"""
