"""The server's subject library: characters, reference views, elements, character cards and sheets."""
