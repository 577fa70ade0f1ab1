"""HTTP API: app factory, dependencies, auth, problem+json, health."""
