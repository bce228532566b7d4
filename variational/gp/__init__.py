"""Sparse variational Gaussian processes: SGPR, SVGP, SWSGP and DKLGP, with their kernels
and likelihoods."""
