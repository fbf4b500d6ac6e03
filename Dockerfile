# The operator image: `docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# The operator only: pyproject.toml packages operators* alone, and the sandbox (sandbox/, a
# distribution of its own, with kmock) is not even in the build context (.dockerignore).
COPY operators ./operators
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home sluice
USER 10001
ENTRYPOINT ["sluice"]
CMD ["run", "--all-namespaces"]
