"""Event ingestion: validation in bulk, COPY into a staging table, idempotent insert."""
