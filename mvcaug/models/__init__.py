"""The networks and where their weights come from: the denoiser and its codec, pretrained and local model
sources, LoRA, model cards and GPU memory plans, and the classifiers (registered with timm)."""
