"""NATS at one edge: the connection, the EVENTS stream, typed events, consumers, the outbox."""
