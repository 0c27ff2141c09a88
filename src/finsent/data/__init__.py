"""Labelled corpora: readers, user tables, splits and label quality."""
