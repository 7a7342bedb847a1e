# SGLang 0.5.23 (CUDA) + glm52-plugin: serves nvidia/GLM-5.2-NVFP4 on one 8-GPU node.
#   docker build -f docker/sglang.Dockerfile -t glm52-sglang .     (from the repository root)
#   docker run --gpus all --ipc=host --shm-size 32g -p 30000:30000 -v ~/.cache/huggingface:/root/.cache/huggingface glm52-sglang [tp8|tp-ep|mtp]
FROM lmsysorg/sglang:v0.5.23

WORKDIR /opt/glm52_plugin
COPY pyproject.toml README.md ./
COPY glm52_plugin ./glm52_plugin
COPY examples ./examples
# --no-deps: keep the image's CUDA torch and SGLang's own pins.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import glm52_plugin, importlib.metadata as m; print(m.entry_points(group='sglang.srt.plugins'))"

EXPOSE 30000
ENTRYPOINT ["bash", "/opt/glm52_plugin/examples/sglang_launch.sh"]
CMD ["tp8", "--host", "0.0.0.0"]
