"""Data: synthetic captioned scenes and readers for the real formats (Visual Genome, COCO captions)."""
from .synthetic_scenes import (BACKGROUNDS, COLOURS, SHAPES, SIZES, TEXTURES, Region, Scene, SceneObject,
                               SyntheticScenes, render_scene)

__all__ = ["BACKGROUNDS", "COLOURS", "SHAPES", "SIZES", "TEXTURES", "Region", "Scene", "SceneObject",
           "SyntheticScenes", "render_scene"]
