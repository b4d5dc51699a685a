"""denoiselab: a reproducible, tracked pipeline for learned image denoising."""

import os

# TensorFlow's C++ start-up chatter buries the progress lines users want to see.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512-VNNI or newer; on
# AVX2-only CPUs (most users' float32 path) it falls back to slower ones. Turned on here, before
# TensorFlow loads: a 2-core AMD EPYC (AVX2) trained the tuned U-Net 2.1 times as fast and the
# CAE 1.8-3 times (bench.training_throughput). Set TF_ENABLE_ONEDNN_OPTS=0 to turn them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
