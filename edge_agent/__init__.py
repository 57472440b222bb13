"""edgesight's on-device agent. Importing it never imports torch or the trainer."""

__version__ = "0.1.0"
