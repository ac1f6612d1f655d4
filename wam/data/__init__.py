"""Data: the LeRobotDataset v3.0 writer and reader, training windows, transforms, collection, latent caches."""
