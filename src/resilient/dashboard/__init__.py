"""A live dashboard of a registry's policies, as a plain ASGI app.

Mount it in any framework (Starlette, FastAPI, Litestar, Quart) or serve it alone::

    from resilient import dashboard

    app.mount("/resilience", dashboard.app())  # resilient.default_registry's policies

It serves one HTML page at ``/`` (inline CSS and JavaScript: no build step, no CDN,
works offline), a JSON snapshot at ``/snapshot``, Server-Sent Events at ``/stream``
(state transitions at once, metrics every ``interval``) and the Hystrix dashboard's
format at ``/hystrix.stream``. ``import resilient`` does not import it. It shows every
policy to whoever can reach it: mount it behind your authentication. See
``docs/operations.md``.

Layout: ``_readout`` reads the policies, ``_stream`` serves the event streams,
``_hystrix`` speaks Hystrix, ``_app`` routes; ``index.html`` is the page.
"""

from resilient.dashboard._app import Dashboard, app

__all__ = ["Dashboard", "app"]

# Reprs, tracebacks and docs say `resilient.dashboard.app`, not the private module.
for _obj in (Dashboard, app):
    _obj.__module__ = __name__
del _obj
