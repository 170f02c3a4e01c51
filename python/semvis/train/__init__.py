"""Training loops and runnable training examples of semvis."""
