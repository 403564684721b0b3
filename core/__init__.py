"""DDPM Studio's engine: the math of the DDPM notes and everything that runs it, with no Qt import.

Map (the notes' order): schedule → forward → models → samplers → vlb → train → cli.
"""
__version__ = "0.1.0"
