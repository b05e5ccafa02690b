# ai-proxy: slim Python, non-root, gunicorn as the entrypoint.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PORT=8080
WORKDIR /srv/ai-proxy

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY app ./app
COPY wsgi.py gunicorn.conf.py config.yaml ./
RUN useradd --system --uid 10001 --home /srv/ai-proxy aiproxy
USER aiproxy

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8080\")}/health', timeout=2)" || exit 1
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
