"""Skills, agents' skill levels, queues and their members."""
