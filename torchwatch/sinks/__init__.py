"""Where a run's results go: the console and TensorBoard, one small file each."""

from .console import ConsoleSink
from .tensorboard import TensorBoardSink

__all__ = ["ConsoleSink", "TensorBoardSink"]
