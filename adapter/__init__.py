"""The control plane: discovery loop, per-server listeners, reconciliation."""
