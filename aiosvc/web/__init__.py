"""The HTTP layer: the front door, routes, WebSocket and SSE streams, OpenAPI."""
