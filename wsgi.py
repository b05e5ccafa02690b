"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from app.cli import app_or_exit

app = app_or_exit()
