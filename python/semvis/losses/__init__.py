"""Training losses of the semvis systems."""
from .vse import hardest_negative_triplet_loss, vse_loss_backend

__all__ = ["hardest_negative_triplet_loss", "vse_loss_backend"]
