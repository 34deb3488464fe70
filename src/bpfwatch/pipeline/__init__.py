"""Pipeline stages between the ring buffer and the user: decode (in the
sensors), enrich, filter, sink."""
