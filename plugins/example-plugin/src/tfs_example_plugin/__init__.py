"""An example plugin for transformer-from-scratch."""
