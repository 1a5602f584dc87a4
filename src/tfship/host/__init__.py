"""Host plumbing, one place each: running commands (proc), Debian packages (apt), the process table (processes)."""
