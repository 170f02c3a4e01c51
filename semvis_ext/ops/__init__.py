"""torch.library registrations, one module per op (imported lazily by semvis_ext)."""
