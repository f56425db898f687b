"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (the gevent worker patches first)."""

from epm import create_app

app = create_app()
