"""Character sheets: composing one from a character's references, generating one, splitting one."""
