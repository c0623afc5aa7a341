"""WSGI entry point; defaults to the production settings; the demo sets config.settings.local."""

import os

from django.core.wsgi import get_wsgi_application

# Production unless told otherwise: a server started without the variable must not run with
# DEBUG on and a known SECRET_KEY (the production settings refuse both).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()
