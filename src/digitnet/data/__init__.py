"""Data layer: IDX files, MNIST sources and splits, exploration and new-image preprocessing."""
