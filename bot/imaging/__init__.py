"""Pixels: safe intake of uploads, background removal, provider preparation, sheet drawing, video, model files and the upload gate."""
