"""Denoisers: the UNet, the exact oracle, adapters for diffusers folders, and checkpoint I/O."""
