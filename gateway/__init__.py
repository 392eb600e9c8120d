"""The data plane: MCP endpoints, upstream invokers, admin API and the CLI."""
