"""semvis: semantic and multi-modal visual search, built on the kernels of semvis_ext."""
__version__ = "0.1.0"
