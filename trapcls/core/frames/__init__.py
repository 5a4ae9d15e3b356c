"""Frames on disk: finding them, labelling them, decoding and preprocessing them."""
