"""What an Inpainter runs besides a PyTorch network: the classical methods by name (classical: OpenCV's Telea and
Navier-Stokes, biharmonic, `reference-paste`), and a network exported as one uint8 graph for onnxruntime or
TorchScript (export)."""
