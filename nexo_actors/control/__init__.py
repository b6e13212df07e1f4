"""The control socket: how the CLI and the sidecar talk to a running daemon."""
