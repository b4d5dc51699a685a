"""denoiselab: a reproducible, tracked pipeline for learned image denoising."""

import os

# TensorFlow's C++ start-up chatter buries the progress lines users want to see.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
