# vLLM 0.33 (CUDA) + glm52-plugin: serves nvidia/GLM-5.2-NVFP4 on one 8-GPU node.
#   docker build -f docker/vllm.Dockerfile -t glm52-vllm .        (from the repository root)
#   docker run --gpus all --ipc=host -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface glm52-vllm [tp8|tp-ep|mtp]
FROM vllm/vllm-openai:v0.33.0

WORKDIR /opt/glm52_plugin
COPY pyproject.toml README.md ./
COPY glm52_plugin ./glm52_plugin
COPY examples ./examples
# --no-deps: the image's torch, vllm, transformers, safetensors, tokenizers, jinja2 and tqdm are
# the versions vLLM was built against; letting pip re-resolve them could swap the CUDA torch.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import glm52_plugin, importlib.metadata as m; print(m.entry_points(group='vllm.general_plugins'))"

EXPOSE 8000
ENTRYPOINT ["bash", "/opt/glm52_plugin/examples/vllm_serve_gpu.sh"]
CMD ["tp8"]
