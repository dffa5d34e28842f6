"""Pixels and files in and out: reading, resizing and writing images (``images``), and safe file
handling: atomic writes, output locks, the cache folder, hashes (``fileio``).
"""
