"""HTTP edge of the gateway: routers parse, call one service, map the result."""
