"""distill: train a strong MNIST teacher, distill it into tiny students, and measure what they keep."""

__version__ = "0.1.0"
