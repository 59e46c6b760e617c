//! The polling client that serves an mcp-server through the MCP reverse proxy, from behind NAT or a firewall.
