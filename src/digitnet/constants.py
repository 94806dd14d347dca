"""Facts about MNIST shared by every pipeline."""

NUM_CLASSES = 10
IMAGE_SIZE = 28  # pixels per side
LABEL_NAMES = tuple(str(d) for d in range(NUM_CLASSES))
# Pixel mean and std of the 60,000 training images scaled to [0, 1]
# (`digitnet data explore` recomputes them: 0.130660 and 0.308108).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
