"""Data the product speaks: Severstal RLE labels, labelled-image folders, image files, synthetic strip.

Submodules are imported where they are used (``from steel_edge.data.rle import decode``) so that the
codec alone stays as cheap to import as numpy.
"""
