"""One module per pipeline stage: reads upstream outputs through the cache, writes its own."""
