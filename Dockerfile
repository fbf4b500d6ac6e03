# The operator image: `docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .`
# manifests/operator.yaml runs it with no command: ENTRYPOINT `sluice`, its args `run ...`
# (tests/unit/test_e2e_assets.py checks the two agree; e2e/ builds and runs it on kind).
FROM python:3.11-slim
# Log lines reach `kubectl logs` as they are written.
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
# The operator only: pyproject.toml packages operators* alone, and the sandbox (sandbox/, a
# distribution of its own, with kmock) is not even in the build context (.dockerignore).
COPY operators ./operators
# operators/cli/bundled links to these: `sluice install --dry-run` from the image prints them too.
COPY crds ./crds
COPY manifests ./manifests
# `sluice run --help` imports every command: a module missing from the package fails the build,
# not the pod.
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home sluice \
    && sluice run --help >/dev/null
# Numeric, so the kubelet can check runAsNonRoot (manifests/operator.yaml) without /etc/passwd.
USER 10001
ENTRYPOINT ["sluice"]
CMD ["run", "--all-namespaces"]
