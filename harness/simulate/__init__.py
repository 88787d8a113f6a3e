"""The synthetic short-video world with ground truth."""
