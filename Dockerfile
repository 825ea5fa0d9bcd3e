# One image for api, processors and gpu consumers; docker-compose.yml picks the command.
# GPU consumers run it with the NVIDIA runtime; the engine uses the GPU when TAPMASK_DEVICE=cuda.

# The web page, built once and served by the API at "/".
FROM node:22-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web ./
RUN npm run build

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
COPY --from=web /web/dist ./web/dist
RUN pip install --no-cache-dir -e .
USER nobody
CMD ["tapmask", "--help"]
