"""Data readers and synthetic generators."""
