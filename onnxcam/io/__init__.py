"""Files in and out: image decoding and pre-processing, rendering, atomic output sets, run records."""
