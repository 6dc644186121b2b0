"""SIP: messages, transactions, dialogs, digest authentication (pure cores, I/O at the edges)."""
