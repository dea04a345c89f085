"""The edge where frames come in: frame sources (synthetic, image folders, files, videos)."""
