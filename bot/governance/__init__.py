"""What a server allows: budget, limits, the content screen and the server's settings."""
