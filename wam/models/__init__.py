"""The networks: our transformer, the Wan and Cosmos adapters, their shared latent side, folder loading."""
