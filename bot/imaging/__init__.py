"""Image processing: safe intake of uploads, background cleanup, character sheets and provider preparation."""
