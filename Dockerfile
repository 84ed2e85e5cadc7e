# One image for web, worker and the migrate step.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --create-home backhaul && mkdir -p /data/storage && chown backhaul /data/storage
USER backhaul

# Production unless told otherwise: the app refuses to start without SECRET_KEY.
ENV BACKHAUL_ENV=production STORAGE_DIR=/data/storage PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "gunicorn wsgi:app --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-4} --timeout 30 --access-logfile -"]
