"""Scoring texts with a run folder: backends, the Predictor, cascades and early exits, one predictor factory."""
