"""edge_runtime: real-time ML audio processing for edge devices."""
__version__ = "0.1.0"
