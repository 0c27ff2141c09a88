"""Monitoring of a served model: prediction logs, input drift and prediction statistics against a reference."""
