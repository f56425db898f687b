# epm as one server: gunicorn with gevent workers, configured by gunicorn.conf.py, as a non-root user.
#   docker build -t epm .
#   docker run -p 8000:8000 -e REDIS_URL=... -e DATABASE_URL=... -e SECRET_KEY=... epm
#   docker run --rm -e DATABASE_URL=... epm flask --app wsgi db upgrade     (the release step)
# See docs/deploy.md.

# -- dependencies, installed into a virtualenv that the final image copies ------------------------------
FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY epm ./epm
# Every dependency ships a binary wheel for CPython 3.11 on Linux: no compiler in any stage. The app
# itself runs from /app (below), so only its dependencies stay in the virtualenv (not even pip).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/pip uninstall --yes epm \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

# -- the image -----------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin epm
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py wsgi.py ./
COPY epm ./epm
# Bytecode compiled now, as root: workers boot without compiling, and the app cannot write here anyway.
RUN python -m compileall -q epm wsgi.py gunicorn.conf.py
# The instance folder is the only place the app writes (its secret key and SQLite file when run without
# SECRET_KEY/DATABASE_URL); the code stays owned by root, read-only for the app.
RUN mkdir instance && chown epm:epm instance
USER epm
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)" || exit 1
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
