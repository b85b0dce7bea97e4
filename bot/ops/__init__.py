"""For admins at a shell: the CLI, the doctor, backup and restore, the demo and the local image check."""
