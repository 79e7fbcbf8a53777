"""``python -m onnxcam`` runs the CLI."""

from onnxcam.cli import main

main()
