"""On-instance side: download, prepare, train, checkpoint, watch for spot notices, bootstrap."""
