"""Training losses of the semvis systems (seed 000: visual and joint visual/textual triplet losses).

The heavy lifting (hinges, reductions, backward) is done by the fused ops of semvis_ext; these
modules only hold parameters and wire the streams together.
"""
from .joint import LOSSES, JointTripletLoss, TextProjection, TripletLoss, build_loss

__all__ = ["LOSSES", "JointTripletLoss", "TextProjection", "TripletLoss", "build_loss"]
