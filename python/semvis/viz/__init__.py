"""Visualization: heatmap overlays written as PNG files."""
from .heatmap import colorize, heatmap_overlay, read_png, upsample_heatmap, write_png

__all__ = ["colorize", "heatmap_overlay", "read_png", "upsample_heatmap", "write_png"]
