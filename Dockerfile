# The operator image: `docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operators ./operators
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home sluice
USER 10001
ENTRYPOINT ["sluice"]
CMD ["run", "--all-namespaces"]
