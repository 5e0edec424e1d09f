"""nvscope.models.vqns: variational quantum noise spectroscopy (sum-of-Lorentzians spectrum)."""
