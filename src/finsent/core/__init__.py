"""The bottom layer: errors, serialization, metrics, text helpers, logging, remote storage, page rendering."""
