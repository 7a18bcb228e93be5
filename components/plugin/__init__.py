"""The `shipyard` Pulumi resource provider plugin: `schema` (its package schema and the provider of each resource
type), `server` (the gRPC server the engine talks to)."""
