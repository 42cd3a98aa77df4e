"""What the HTTP clients' integrations share, with no HTTP library and no I/O.

A floor of its own, above ``_policies`` and below ``resilient.httpx`` and
``resilient.requests`` (the thin shells, one per client library): how a response is
classified (``_classify``), how ``Retry-After`` is read, which policies guard which
host (``_hosts``), and how one request runs through them (``_exchange``): the deadline
sent on, the attempts, the failed responses held and closed. The shells only convert
their library's request and response objects and do the sending.
"""
