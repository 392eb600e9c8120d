"""Pure conversion of Nacos MCP-registry documents into gateway models."""
