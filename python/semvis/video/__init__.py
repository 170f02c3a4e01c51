"""Image-to-video search by temporal aggregation of binary local features (spec B.3).

    from semvis.video import VideoIndex
    index = VideoIndex()                       # ORB at 720 px, tracks, shots, bit-majority keys
    index.add("movie.mp4", "movie")            # or a folder of frames, or a uint8 array [T, H, W, 3]
    index.build()
    index.search(photo, top=5)                 # [(video, shot, frame, score), ...]
    index.save("index.svx"); VideoIndex.load("index.svx")

Needs OpenCV (``pip install "semvis[video]"``).
"""
from .features import FrameFeatures, OrbExtractor
from .config import VideoIndexConfig
from .index import METHODS, VideoHit, VideoIndex
from .io import FrameSource, VideoReadError, open_frames, read_image

__all__ = ["VideoIndex", "VideoIndexConfig", "VideoHit", "METHODS", "OrbExtractor", "FrameFeatures", "FrameSource", "VideoReadError",
           "open_frames", "read_image"]
