"""``dejavu serve``: the HTTP recognition service (FastAPI + uvicorn, the ``server`` extra).

:mod:`~dejavu.server.app` builds the application, :mod:`~dejavu.server.api` and
:mod:`~dejavu.server.websocket` hold its routes, :mod:`~dejavu.server.uploads` receives and
decodes uploads safely, :mod:`~dejavu.server.stream` turns streamed PCM into timeline events,
:mod:`~dejavu.server.settings` reads the configuration's ``server`` section and
:mod:`~dejavu.server.cli` runs it; ``static/`` is the browser page.
"""
