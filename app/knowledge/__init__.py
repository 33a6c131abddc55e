"""Knowledge bases: documents learned into LoRA shards, and the router that picks one per request."""
