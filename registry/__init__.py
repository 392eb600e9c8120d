"""State of the gateway: internal models, the versioned GatewayState and its managers."""
