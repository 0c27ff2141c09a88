"""The run folder: its file contract, the catalogue of many runs, and run-to-run comparison."""
