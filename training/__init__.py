"""Training: the bundled trainer that streams dataset shards."""
