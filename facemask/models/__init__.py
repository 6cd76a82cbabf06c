"""Models: timm backbones, the baseline CNN, joined backbones, offline weights, save/load,
batched inference."""
