"""Analysis: SQL aggregation -> sufficient statistics -> abstats.stats -> immutable snapshots; drift."""
