"""Deployment planning for GLM-5.2: memory, KV cache and FLOPs per GPU configuration."""
