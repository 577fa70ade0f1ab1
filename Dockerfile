# syntax=docker/dockerfile:1
# The production image: abstats installed as a wheel (not editable; the wheel carries its
# migrations) on the locked dependencies of deploy/requirements.lock, without the embedded
# PostgreSQL (the `embedded` extra): ABSTATS_DATABASE_URL is required. EXTRAS="[demo]" adds
# scikit-learn for `abstats demo` (the compose `demo` service).
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. the dependencies, exactly as locked: this layer is rebuilt only when the lock changes
COPY deploy/requirements.lock /tmp/requirements.lock
RUN pip install --no-deps -r /tmp/requirements.lock

# 2. abstats itself, built from the source and installed as a wheel; the source is then removed
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY migrations ./migrations
COPY abstats ./abstats
ARG EXTRAS=""
RUN pip install --constraint /tmp/requirements.lock ".${EXTRAS}" \
    && rm -rf /src \
    && useradd --create-home --uid 10001 abstats \
    && mkdir -p /app/reports /app/data && chown abstats /app/reports /app/data

WORKDIR /app
USER abstats
EXPOSE 8000
CMD ["abstats", "serve", "--host", "0.0.0.0", "--port", "8000"]
