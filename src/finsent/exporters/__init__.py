"""Exporters that turn a trained run folder into other runtimes' formats."""
