"""Data: synthetic captioned scenes and readers for the real formats (Visual Genome, COCO captions)."""
from .captions import PAPER_SPLIT, CaptionedImage, load_image, read_coco_captions, read_visual_genome, split_ids
from .synthetic_scenes import (BACKGROUNDS, COLOURS, SHAPES, SIZES, TEXTURES, Region, Scene, SceneObject,
                               SyntheticScenes, render_scene)

__all__ = ["PAPER_SPLIT", "CaptionedImage", "load_image", "read_coco_captions", "read_visual_genome", "split_ids",
           "BACKGROUNDS", "COLOURS", "SHAPES", "SIZES", "TEXTURES", "Region", "Scene", "SceneObject",
           "SyntheticScenes", "render_scene"]
