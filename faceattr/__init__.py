"""faceattr: train, compare, export and serve CelebA face-attribute classifiers."""

__version__ = "0.1.0"
