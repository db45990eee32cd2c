"""Durable stores: SQLite (with its confirm journal and checkpointer), Redis Streams
(with endpoint leases), and the durable buffer a delivery stage keeps in a store."""
