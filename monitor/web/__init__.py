"""The daemon's HTTP application on ``server.listen``: /healthz and /metrics (open), the JSON API under
/api/v1 and the console (``server.tokens``). See monitor.web.server for how it is served."""

from monitor.web.health import evaluate_health, parse_listen, stale_after
from monitor.web.server import ServerError, WebServer, listen_problem

__all__ = ["ServerError", "WebServer", "evaluate_health", "listen_problem", "parse_listen", "stale_after"]
