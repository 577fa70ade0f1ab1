FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY abstats ./abstats
COPY migrations ./migrations
RUN pip install -e . && useradd --create-home abstats && mkdir -p /app/reports && chown abstats /app/reports
USER abstats
EXPOSE 8000
CMD ["abstats", "serve", "--host", "0.0.0.0", "--port", "8000"]
