"""The MM-DiT: layers, MixD-RoPE, attention backends, blocks and the model that wires them."""
