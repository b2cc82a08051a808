from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from reliability.metrics import exposition


def metrics(request):
    """Prometheus exposition: per-process (or multiprocess) metrics plus shared breaker state."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
