"""Listing MCP servers: Nacos' MCP listing, and the search of the versions files where Nacos has none."""
