"""AlphaFold2 network in PyTorch. Importing this package imports nothing heavy; submodules import torch."""
