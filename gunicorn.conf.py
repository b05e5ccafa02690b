"""gunicorn settings for ai-proxy; every value can be set through the environment."""

import contextlib
import gc
import os
import resource
import signal
import threading


def raise_open_files_limit(needed):
    """Raise the soft limit on open files to `needed`, as far as the hard limit allows; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# gthread, with gunicorn's own error answers (bad request line, limits) as JSON: see app/worker.py.
worker_class = "app.worker.ThreadWorker"
# Sizing (README, "Sizing"). A request holds a thread for its whole life, a stream for as long as it
# lasts, waiting on its upstream rather than the CPU: the thread count is how many requests (streams)
# a worker serves at once, and the others wait in a queue with no byte sent. Threads start only when
# none is idle, so an unused allowance costs nothing. Measured: an open stream costs ~82 KiB of RSS,
# its thread here (~60 KiB: stack pages, buffers) and the gateway's reader thread of its upstream
# (~20 KiB); 1,000 streams of a chunk a second took ~80 MiB above an idle worker and a quarter to a
# third of one core. So 1,500: the 1,000 streams of the target plus room for the ordinary requests and
# slow clients that come meanwhile. A worker's real limit is its CPU (one core), spent per chunk.
threads = int(os.environ.get("AI_PROXY_THREADS", "1500"))
# gthread workers heartbeat from their main loop, so a long stream never trips `timeout`; it only
# catches a worker that is truly stuck.
timeout = int(os.environ.get("AI_PROXY_WORKER_TIMEOUT", "120"))
# On SIGTERM in-flight answers and streams get this long to finish (Heroku allows 30 s).
graceful_timeout = int(os.environ.get("AI_PROXY_GRACEFUL_TIMEOUT", "30"))
# Longer than the idle timeout of nginx's and most load balancers' upstream keep-alive (60 s). An idle
# kept-alive connection holds a file descriptor, not a thread.
keepalive = int(os.environ.get("AI_PROXY_KEEPALIVE", "75"))
# Client connections per worker: those being served or queued, kept-alive idle ones, and new ones not
# sending yet. gunicorn keeps at most (worker_connections - threads) idle (beyond that it closes a
# connection after its answer) and stops accepting at worker_connections (the kernel's backlog holds
# the rest): twice the threads lets every client of a full worker keep its connection between requests.
worker_connections = 2 * threads
# File descriptors per worker: a client connection each, an upstream connection per running request
# and as many kept idle for reuse (at most what was in use), and some of its own. Past the limit,
# accept() fails and the worker restarts, so the soft limit (`ulimit -n`, often 1,024) is raised as far
# as the hard one allows; when that is still too low, the start-up log says so.
open_files_needed = worker_connections + 2 * threads + 256
open_files = raise_open_files_limit(open_files_needed)
# Build the app once in the master: a bad config fails before any worker starts, and workers
# share the loaded code copy-on-write. (SIGHUP reloads config.yaml all the same: see when_ready.)
preload_app = True
accesslog = None  # the app writes its own access line with model, attempts and latencies
errorlog = "-"
loglevel = os.environ.get("AI_PROXY_LOG_LEVEL", "info").lower()
if os.environ.get("AI_PROXY_LOG_FORMAT", "").lower() == "json":
    # gunicorn's own lines (start, workers, signals) as JSON too: one object per line, all of them.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},  # see accesslog
        },
    }
# gunicorn's control socket (gunicornc) is not used, and every instance would share one default path
# ($HOME/.gunicorn/gunicorn.ctl).
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proxy_allow_ips = forwarded_allow_ips

# Prometheus multiprocess mode: every worker writes its counters and histograms to files in
# PROMETHEUS_MULTIPROC_DIR and GET /metrics (in whichever worker answers) sums them. The variable
# must be set before prometheus_client is imported, i.e. here, before the app is preloaded. Given
# one, its stale *.db files from an earlier run are removed; not given, a fresh temp dir is made
# and removed when the master exits. (The marker keeps a config reload on SIGHUP from doing either
# again.)
if not os.environ.get("AI_PROXY_METRICS_READY"):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import glob

        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
            os.remove(_stale)
    else:
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ai-proxy-metrics-")
        os.environ["AI_PROXY_METRICS_TMPDIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.environ["AI_PROXY_METRICS_READY"] = "1"


def when_ready(server):
    if open_files < open_files_needed:
        server.log.warning(
            "The open-file limit (ulimit -n) is %d: %d threads and %d connections a worker may need %d "
            "(see README, Sizing)",
            open_files,
            threads,
            worker_connections,
            open_files_needed,
        )
    reload_on_hup(server)


def reload_on_hup(server):
    """SIGHUP reloads config.yaml inside the running processes, not by forking fresh workers from the
    preloaded (stale) app: the master checks the file and rebuilds its own copy (so a worker it forks
    later starts on the new config), then asks each worker to do the same over its storage. Quota
    counts survive, memory storage included; in-flight answers and streams finish undisturbed. A
    broken file is logged once, by the master, and nothing changes. (gunicorn's own HUP would also
    re-read this file; its settings need a restart.)"""
    live = server.app.wsgi() if server.cfg.preload_app else None
    if not hasattr(live, "reload"):  # another WSGI app (bench): gunicorn's own HUP
        return

    def reload_everywhere(signum, frame):
        # A HUP while this one runs is dropped: a handler nested inside it would wait on its lock.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            if live.reload():
                for pid in list(server.WORKERS):
                    with contextlib.suppress(ProcessLookupError):  # gone: its successor forks the new app
                        os.kill(pid, signal.SIGHUP)
        finally:
            signal.signal(signal.SIGHUP, reload_everywhere)

    signal.signal(signal.SIGHUP, reload_everywhere)


# Python's cyclic garbage collector stops every thread while it runs; a full (oldest generation)
# pass walks every live object. A worker holding 1,000 streams has ~80 MB of them, and the default
# schedule ran a full pass each time that heap grew by a quarter: 2-3 pauses of 40-130 ms while
# streams were opening, which made the p99 of first bytes (and of the gaps between chunks). So the
# master freezes what the preloaded app built before it forks (never collected, and never written
# to by a scan: the workers keep sharing those pages), and a worker runs a full pass ten times less
# often than the default (its young generations are collected as usual, so short-lived cycles go
# at once; long-lived ones still go, later). Measured in bench/capacity.py: the ramp's added first
# byte p99 from 80-120 ms to 9 ms. (gc.freeze and gc.set_threshold are the documented way.)
GC_THRESHOLDS = (700, 10, 100)  # Python's defaults are (700, 10, 10)


def pre_fork(server, worker):
    gc.freeze()


def post_fork(server, worker):
    gc.set_threshold(*GC_THRESHOLDS)


def post_worker_init(worker):
    """In a worker, SIGHUP (sent by the master, see when_ready) reloads the app on a thread of its
    own: the main loop keeps accepting, and requests keep running, meanwhile."""
    live = worker.wsgi
    if not hasattr(live, "reload"):
        return

    def reload_here(signum, frame):
        reload = threading.Thread(target=live.reload, kwargs={"quiet": True}, name="ai-proxy-reload")
        reload.daemon = True
        reload.start()

    signal.signal(signal.SIGHUP, reload_here)
    signal.siginterrupt(signal.SIGHUP, False)  # never break a system call of a running request


def child_exit(server, worker):
    """A worker is gone: drop its live-gauge files (its counters and histograms still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    made = os.environ.get("AI_PROXY_METRICS_TMPDIR")
    if made and made == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import shutil

        shutil.rmtree(made, ignore_errors=True)
