FROM python:3.11-slim
# EXTRAS="[demo]" adds scikit-learn for `abstats demo` (the compose `demo` service).
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY abstats ./abstats
COPY migrations ./migrations
RUN pip install -e ".${EXTRAS}" \
    && useradd --create-home abstats \
    && mkdir -p /app/reports /app/data && chown abstats /app/reports /app/data
USER abstats
EXPOSE 8000
CMD ["abstats", "serve", "--host", "0.0.0.0", "--port", "8000"]
