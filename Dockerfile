# One image for api, processors and gpu consumers; docker-compose.yml picks the command.
# GPU consumers run it with the NVIDIA runtime; the engine uses the GPU when TAPMASK_DEVICE=cuda.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tapmask ./tapmask
COPY schemas ./schemas
COPY producers ./producers
COPY processors ./processors
COPY gpu_consumers ./gpu_consumers
COPY api ./api
COPY infra ./infra
RUN pip install --no-cache-dir -e .
USER nobody
CMD ["tapmask", "--help"]
