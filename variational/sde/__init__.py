"""Variational inference for SDEs driven by fractional noise (Markov-approximate fBM)."""
